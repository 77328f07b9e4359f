"""How a gallery runs its jobs, stage by stage: each job is reused when its key (model, images,
settings, cnnviz's version) has not changed, else run, and its files and record kept as soon as it
is done, so that a killed run loses only the jobs under way. Inside a ``torch.distributed``
process group (torchrun) the ranks share the work: see :meth:`StageRunner.run`.

A stage is a list of :class:`Job` values; :class:`StageRunner` runs the stages of one gallery
(its :class:`cnnviz.site.plan.GalleryPlan`: the folder and the model's key) and keeps every
job's record.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from cnnviz.core import output as files
from cnnviz.core.executor import Executor, OutOfStep
from cnnviz.core.version import __version__
from cnnviz.errors import CnnvizError
from cnnviz.site.plan import GalleryPlan
from cnnviz.site.records import RECORDS, file_stem, read_record, recorded_files, remove_written
from cnnviz.site.settings import JOB_SETTINGS, KEY_NAMES, GallerySettings, ProgressFactory

#: the stages whose jobs every rank of a process group runs together (their analyses share the work)
COLLECTIVE_STAGES = ("statistics", "maximize", "renders", "concepts", "classes")


@dataclass(frozen=True)
class Job:
    """One job of a stage.

    Attributes:
        name: the job's name (``"maximize features.10"``), which names its record; its first word
            is its kind (:data:`cnnviz.site.settings.JOB_SETTINGS`).
        inputs: what its key is made of besides the settings of its kind, the model and cnnviz's
            version (JSON-ready).
        work: ``work(progress) -> (figures, data)``: the job itself, telling ``progress`` the work done.
        size: its part of the stage's progress.
    """

    name: str
    inputs: dict
    work: Callable[[Callable[[int], object]], tuple[list, dict]]
    size: int


class StageRunner:
    """Runs the stages of one gallery, in the order they are given, and keeps their records.

    Attributes:
        records: each job's record (``key``, ``job``, ``figures``, ``data``, ``error``, ``files``), by name.
        failed: ``job: reason`` for each job that failed.
        done, reused: the jobs run and the jobs whose earlier record was kept (counted on the first rank).
    """

    def __init__(self, plan: GalleryPlan, settings: GallerySettings, work: Executor, force: bool = False,
                 progress: ProgressFactory | None = None):
        self.plan, self.settings, self.work, self.force, self.progress = plan, settings, work, force, progress
        self.folder = plan.folder
        self.records: dict[str, dict] = {}
        self.failed: list[str] = []
        self.done = self.reused = 0
        self._previous: dict[str, dict] = {}  # the first rank's: the records of the stage's jobs that are not reused

    def run(self, stage: str, jobs: list[Job]) -> None:
        """Run a stage's jobs, reusing those whose key has not changed, and keep each job's files
        and record as soon as it is done (a killed run loses only the jobs under way). Inside a
        process group (torchrun), a stage of :data:`COLLECTIVE_STAGES` runs each job on every
        rank (its analysis shares its own work: the images of the statistics, the units of the
        renders, and rank 0 draws and writes); any other stage's jobs are dealt out to the ranks,
        each running its own alone, round by round, and rank 0 writes what they made. Rank 0
        decides what is reused and keeps the records; every rank ends the stage with the same."""
        work = self.work
        total = sum(job.size for job in jobs)
        bar = self.progress(stage, total) if self.progress is not None and jobs and work.first_process else None
        reused = work.first(f"gallery/{stage}/reused", lambda: self._reusable(jobs))
        if work.first_process:
            for job in jobs:
                if job.name in reused and bar is not None:
                    bar(job.size)
            self.reused += len(reused)
        records = dict(reused)
        to_run = [job for job in jobs if job.name not in reused]
        with work.progress(f"gallery/{stage}/progress", bar) as shown:
            # the jobs tell a function of their own, never the bar's method: an analysis given a
            # tqdm bar's update sets the bar's total to its own work
            def tick(amount: int) -> None:
                if shown is not None:
                    shown(amount)

            if not work.parallel or stage in COLLECTIVE_STAGES:
                for job in to_run:
                    result = _attempt(job, tick)
                    records.update(work.first(f"gallery/{stage}/kept", lambda: self._keep([job], {job.name: result})))
            else:
                for round_jobs, results in self._dealt_out(to_run, tick):
                    records.update(work.first(f"gallery/{stage}/kept", lambda: self._keep(round_jobs, results)))
        for job in jobs:
            record = records[job.name]
            if record.get("error"):
                self.failed.append(f"{job.name}: {record['error']}")
            self.records[job.name] = record
        if bar is not None and hasattr(getattr(bar, "__self__", None), "close"):
            bar.__self__.close()

    def _reusable(self, jobs) -> dict[str, dict]:
        """The records of the jobs whose key and files are as they were (none with ``force``).
        The others' records are put aside (:attr:`_previous`, for the files they no longer
        make) and removed: a job interrupted while it overwrites its files must not leave a
        record that a later run would trust."""
        reused = {}
        self._previous = {}
        for job in jobs:
            record_path = self.folder / RECORDS / f"{file_stem(job.name)}.json"
            previous = read_record(record_path) or {}
            record = None if self.force else previous
            if record and record.get("key") == self.key(job) and not record.get("error") and all(
                (self.folder / path).is_file() for path in recorded_files(record)
            ):
                reused[job.name] = record
            else:
                self._previous[job.name] = previous
                record_path.unlink(missing_ok=True)
        return reused

    def _dealt_out(self, jobs: list[Job], tick):
        """Jobs dealt out to the ranks (the largest first, each to the rank with the least work so
        far), each run alone by its rank with its files kept in memory, round by round (each
        rank's first job, then its second, ...): per round, its jobs and, on rank 0, their results
        with their files (the other ranks get an empty dict)."""
        dealt = self.work.deal(jobs, size=lambda job: job.size)
        here = self.folder.absolute()
        for number, round_jobs in enumerate(dealt.rounds()):
            results = {}
            if number < len(dealt.mine):
                job = dealt.mine[number]
                with self.work.alone(), files.captured() as made:
                    figures, data, error = _attempt(job, tick)
                made = {os.path.relpath(path, here).replace(os.sep, "/"): content for path, content in made.items()}
                results[job.name] = (figures, data, error, made)
            everything = self.work.collected("gallery/dealt", results)
            yield round_jobs, ({} if everything is None else {k: v for part in everything for k, v in part.items()})

    def _keep(self, jobs: list[Job], results: dict[str, tuple]) -> dict[str, dict]:
        """Rank 0: write what the jobs made (the files other ranks made, the records) and remove
        what they no longer make; their records."""
        records = {}
        for job in jobs:
            name = job.name
            figures, data, error, *made = results[name]
            written = {path for f in figures for path in (f["file"], f["thumbnail"])} | set(data.pop("written", []))
            for path, content in (made[0] if made else {}).items():  # what the job made on its rank
                files.write_bytes(self.folder / path, content)
            record_path = self.folder / RECORDS / f"{file_stem(name)}.json"
            previous = self._previous.get(name, {})
            record = {"key": self.key(job), "job": name, "figures": figures, "data": data, "error": error,
                      "files": sorted(written)}
            if error is None:  # failures are retried by the next run, never reused
                files.write_json(record_path, record)
            # what the job wrote last time and not this time (fewer channels, say) is stale
            remove_written(self.folder, recorded_files(previous) - written)
            self.done += 1
            records[name] = record
        return records

    def remove_stale_jobs(self) -> None:
        """Records of jobs this run no longer has (a layer no longer shown, fewer images), and the
        files only they wrote."""
        current = {f"{file_stem(name)}.json" for name in self.records}
        kept = {path for record in self.records.values() for path in recorded_files(record)}
        for record_path in sorted((self.folder / RECORDS).glob("*.json")):
            if record_path.name in current:
                continue
            remove_written(self.folder, recorded_files(read_record(record_path) or {}) - kept)
            record_path.unlink(missing_ok=True)

    def key(self, job: Job) -> str:
        """A job's key: its inputs, the settings it depends on, the model and cnnviz's version."""
        relevant = {KEY_NAMES.get(field_name, field_name): getattr(self.settings, field_name)
                    for field_name in JOB_SETTINGS[job.name.split(" ")[0]]}
        content = {"job": job.name, "inputs": job.inputs, "settings": relevant, "model": self.plan.model_key,
                   "version": __version__}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _attempt(job: Job, tick) -> tuple[list, dict, str | None]:
    """A job's ``(figures, data, error)``: a job that fails is reported on its page, the rest go on."""
    try:
        figures, data = job.work(tick)
        return figures, data, None
    except (files.WriteFailed, OutOfStep):
        raise  # a full disk: every job after it would fail the same way (the re-run completes); ranks
        # out of step: the group cannot go on
    except CnnvizError as failure:
        return [], {}, str(failure)
    except Exception as failure:  # a bug in one figure: report it, write the rest
        return [], {}, f"internal error: {type(failure).__name__}: {failure} (please report it)"
