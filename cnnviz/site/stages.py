"""How a gallery runs its jobs, stage by stage: each job is reused when its key (model, images,
settings, cnnviz's version) has not changed, else run, and its files and record kept as soon as it
is done, so that a killed run loses only the jobs under way. Inside a ``torch.distributed``
process group (torchrun) the ranks share the work: see :meth:`Stages._run_stage`.

:class:`Stages` is a mixin of the builder (:mod:`cnnviz.site.build`): it reads the builder's
folder, settings, model key, rank and progress factory, and fills its records.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os

from cnnviz.core import distributed
from cnnviz.core import output as files
from cnnviz.core.version import __version__
from cnnviz.errors import CnnvizError
from cnnviz.site.records import RECORDS, file_stem, read_record, recorded_files, remove_written
from cnnviz.site.settings import JOB_SETTINGS

#: the stages whose jobs every rank of a process group runs together (their analyses share the work)
COLLECTIVE_STAGES = ("statistics", "maximize", "renders", "classes")


class Stages:
    """Running a gallery's stages (mixed into its builder)."""

    def _run_stage(self, stage: str, jobs) -> None:
        """Run a stage's jobs, reusing those whose key has not changed, and keep each job's files
        and record as soon as it is done (a killed run loses only the jobs under way). Inside a
        process group (torchrun), a stage of :data:`COLLECTIVE_STAGES` runs each job on every
        rank (its analysis shares its own work: the images of the statistics, the units of the
        renders, and rank 0 draws and writes); any other stage's jobs are dealt out to the ranks,
        each running its own alone, round by round, and rank 0 writes what they made. Rank 0
        decides what is reused and keeps the records; every rank ends the stage with the same."""
        total = sum(work for *_, work in jobs)
        bar = self.progress(stage, total) if self.progress is not None and jobs and self.writer else None
        update = distributed.SharedProgress(f"gallery/{stage}/progress", bar) if self.ranks > 1 else bar
        self._stage_update = update
        reused = distributed.from_first(f"gallery/{stage}/reused", lambda: self._reusable(jobs))
        for name, _, _, work in jobs:
            if name in reused and update is not None and self.writer:
                update(work)
        if self.writer:
            self.reused += len(reused)
        records = dict(reused)
        to_run = [job for job in jobs if job[0] not in reused]
        with update if self.ranks > 1 else contextlib.nullcontext():
            if self.ranks == 1 or stage in COLLECTIVE_STAGES:
                for job in to_run:
                    result = self._attempt(job[2])
                    kept = distributed.from_first(f"gallery/{stage}/kept", lambda: self._keep([job], {job[0]: result}))
                    records.update(kept)
            else:
                for round_jobs, results in self._dealt_out(to_run):
                    records.update(distributed.from_first(f"gallery/{stage}/kept", lambda: self._keep(round_jobs, results)))
        for name, *_ in jobs:
            record = records[name]
            if record.get("error"):
                self.failed.append(f"{name}: {record['error']}")
            self.records[name] = record
        self._stage_update = None
        if bar is not None and hasattr(getattr(bar, "__self__", None), "close"):
            bar.__self__.close()

    def _reusable(self, jobs) -> dict[str, dict]:
        """The records of the jobs whose key and files are as they were (none with ``force``).
        The others' records are put aside (:attr:`_previous`, for the files they no longer
        make) and removed: a job interrupted while it overwrites its files must not leave a
        record that a later run would trust."""
        reused = {}
        self._previous = {}
        for name, inputs, _, _ in jobs:
            record_path = self.folder / RECORDS / f"{file_stem(name)}.json"
            previous = read_record(record_path) or {}
            record = None if self.force else previous
            if record and record.get("key") == self._key(name, inputs) and not record.get("error") and all(
                (self.folder / path).is_file() for path in recorded_files(record)
            ):
                reused[name] = record
            else:
                self._previous[name] = previous
                record_path.unlink(missing_ok=True)
        return reused

    @staticmethod
    def _attempt(work_function) -> tuple[list, dict, str | None]:
        """A job's ``(figures, data, error)``: a job that fails is reported on its page, the rest go on."""
        try:
            figures, data = work_function()
            return figures, data, None
        except (files.WriteFailed, distributed.OutOfStep):
            raise  # a full disk: every job after it would fail the same way (the re-run completes); ranks
            # out of step: the group cannot go on
        except CnnvizError as failure:
            return [], {}, str(failure)
        except Exception as failure:  # a bug in one figure: report it, write the rest
            return [], {}, f"internal error: {type(failure).__name__}: {failure} (please report it)"

    def _dealt_out(self, jobs):
        """Jobs dealt out to the ranks (the largest first, each to the rank with the least work so
        far), each run alone by its rank with its files kept in memory, round by round (each
        rank's first job, then its second, ...): per round, its jobs and, on rank 0, their results
        with their files (the other ranks get an empty dict)."""
        load = [0] * self.ranks
        dealt: list[list] = [[] for _ in range(self.ranks)]
        for job in sorted(jobs, key=lambda job: -job[3]):
            rank = min(range(self.ranks), key=lambda r: (load[r], r))
            load[rank] += max(job[3], 1)
            dealt[rank].append(job)
        here = self.folder.absolute()
        for number in range(max(map(len, dealt), default=0)):
            round_jobs = [mine[number] for mine in dealt if number < len(mine)]
            results = {}
            if number < len(dealt[self.rank]):
                name, _, work_function, _ = dealt[self.rank][number]
                with distributed.alone(), files.captured() as made:
                    figures, data, error = self._attempt(work_function)
                made = {os.path.relpath(path, here).replace(os.sep, "/"): content for path, content in made.items()}
                results[name] = (figures, data, error, made)
            everything = distributed.gathered("gallery/dealt", results)
            yield round_jobs, ({} if everything is None else {k: v for part in everything for k, v in part.items()})

    def _keep(self, jobs, results: dict[str, tuple]) -> dict[str, dict]:
        """Rank 0: write what the jobs made (the files other ranks made, the records) and remove
        what they no longer make; their records."""
        records = {}
        for name, inputs, _, _ in jobs:
            figures, data, error, *made = results[name]
            written = {path for f in figures for path in (f["file"], f["thumbnail"])} | set(data.pop("written", []))
            for path, content in (made[0] if made else {}).items():  # what the job made on its rank
                files.write_bytes(self.folder / path, content)
            record_path = self.folder / RECORDS / f"{file_stem(name)}.json"
            previous = self._previous.get(name, {})
            record = {"key": self._key(name, inputs), "job": name, "figures": figures, "data": data, "error": error,
                      "files": sorted(written)}
            if error is None:  # failures are retried by the next run, never reused
                files.write_json(record_path, record)
            # what the job wrote last time and not this time (fewer channels, say) is stale
            remove_written(self.folder, recorded_files(previous) - written)
            self.done += 1
            records[name] = record
        return records

    def _remove_stale_jobs(self) -> None:
        """Records of jobs this run no longer has (a layer no longer shown, fewer images), and the
        files only they wrote."""
        current = {f"{file_stem(name)}.json" for name in self.records}
        kept = {path for record in self.records.values() for path in recorded_files(record)}
        for record_path in sorted((self.folder / RECORDS).glob("*.json")):
            if record_path.name in current:
                continue
            remove_written(self.folder, recorded_files(read_record(record_path) or {}) - kept)
            record_path.unlink(missing_ok=True)

    def _key(self, name: str, inputs: dict) -> str:
        """A job's key: its inputs, the settings it depends on, the model and cnnviz's version."""
        relevant = {field_name: getattr(self.settings, field_name) for field_name in JOB_SETTINGS[name.split(" ")[0]]}
        content = {"job": name, "inputs": inputs, "settings": relevant, "model": self.model_key,
                   "version": __version__}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()

    def _tick(self, amount: int) -> None:
        if getattr(self, "_stage_update", None) is not None:
            self._stage_update(amount)
