"""The typed results: the generated models (models.py) with what a program needs on top,
an output that reads and saves itself, and the events of the streams."""

from __future__ import annotations

import builtins
import copy
import mimetypes
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

from . import models

if TYPE_CHECKING:
    from ._core import Core

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
BATCH_FINISHED = frozenset({"completed", "canceled"})
COMPARISON_FINISHED = frozenset({"completed"})
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


class _Bound(BaseModel):
    """A result that can make more calls (an output reading itself): the client that
    parsed it binds it."""

    _core: Core | None = PrivateAttr(default=None)

    def _bind(self, core: Core) -> None:
        self._core = core

    def _bound_core(self) -> Core:
        if self._core is None:
            raise RuntimeError("this result was not made by a client: nothing to read it with")
        return self._core


class _Image(_Bound):
    """An image the API made, that reads itself: from its presigned URL, or from a fresh
    one when that has expired (the job's id and the image's index name it)."""

    _job_id: str | None = PrivateAttr(default=None)
    _index: int = PrivateAttr(default=0)

    def _located(self, job_id: str | None, index: int) -> None:
        self._job_id = job_id
        self._index = index

    def _source(self) -> tuple[str | None, str]:
        """Its URL (None: ask for a fresh one) and its content type."""
        raise NotImplementedError

    @property
    def extension(self) -> str:
        content_type = self._source()[1]
        return _EXT.get(content_type) or mimetypes.guess_extension(content_type) or ""

    def read(self) -> builtins.bytes:
        """The image's bytes."""
        core = self._bound_core()
        data: builtins.bytes = core.run_sync(
            core.download(self._source()[0], self._job_id, self._index))
        return data

    async def aread(self) -> builtins.bytes:
        """The image's bytes, without blocking the event loop."""
        core = self._bound_core()
        data: builtins.bytes = await core.run_async(
            core.download(self._source()[0], self._job_id, self._index))
        return data

    def save(self, path: str | Path) -> Path:
        """Write the image to `path`; a directory gets `<job id>-<n><ext>`. The path written."""
        target = self._target(Path(path))
        target.write_bytes(self.read())
        return target

    async def asave(self, path: str | Path) -> Path:
        target = self._target(Path(path))
        target.write_bytes(await self.aread())
        return target

    def _target(self, path: Path) -> Path:
        if path.is_dir():
            return path / f"{self._job_id or 'output'}-{self._index}{self.extension}"
        return path


class Output(models.OutputOut, _Image):
    """One output image. `url` is presigned (it expires, see EDITQ_PRESIGN_EXPIRY_SECONDS);
    `read()` asks the API for a fresh one when it has."""

    def _source(self) -> tuple[str | None, str]:
        return self.url, self.content_type


class Job(models.JobOut, _Bound):
    """A job as `GET /v1/jobs/{id}` answers it; `outputs` read and save themselves."""

    outputs: list[Output]  # type: ignore[assignment]

    def _bind(self, core: Core) -> None:
        super()._bind(core)
        for index, output in enumerate(self.outputs):
            output._bind(core)
            output._located(self.id, index)

    @property
    def done(self) -> bool:
        """Whether it has ended: succeeded, failed or canceled."""
        return self.status in TERMINAL


class JobEvent(BaseModel):
    """One event of `GET /v1/jobs/{id}/stream`: a transition of the job's timeline and the
    job as it is after it (`queue_position` while queued)."""

    model_config = ConfigDict(extra="allow")

    id: int | None
    type: str
    event: models.EventOut | None
    job: Job

    @property
    def queue_position(self) -> int | None:
        return self.job.queue_position


class Batch(models.BatchOut):
    """A batch as `GET /v1/batches/{id}` answers it."""

    @property
    def done(self) -> bool:
        return self.status in BATCH_FINISHED


class BatchUpdate(BaseModel):
    """One event of `GET /v1/batches/{id}/stream` (`id` None when it was polled)."""

    id: int | None
    batch: Batch


class BatchEstimate(BaseModel):
    """A dry run's answer: what the batch would make and cost, and the invalid lines."""

    model_config = ConfigDict(extra="allow")

    count: int
    estimated_cost: str
    currency: str
    budget_ok: bool
    budget: dict[str, Any]
    invalid: list[dict[str, Any]] = []
    invalid_count: int = 0


class BatchResult(_Bound):
    """One line of a batch's results (and of its manifest): one job, or a parent that a
    reprocessing skipped (`status` "skipped", `id` None, `reason`). `outputs` are
    presigned URLs; `read(n)` and `save(path, n)` fetch them."""

    model_config = ConfigDict(extra="allow")

    id: str | None
    index: int | None = None
    parent_job_id: str | None = None
    status: str
    model: str | None = None
    outputs: list[str] = []
    cost: dict[str, Any] = {}
    error: models.ErrorOut | None = None
    reason: str | None = None

    def read(self, index: int = 0) -> builtins.bytes:
        """Output `index`'s bytes (a fresh URL is asked for when this one has expired)."""
        core = self._bound_core()
        data: builtins.bytes = core.run_sync(core.download(self.outputs[index], self.id, index))
        return data

    async def aread(self, index: int = 0) -> builtins.bytes:
        core = self._bound_core()
        data: builtins.bytes = await core.run_async(
            core.download(self.outputs[index], self.id, index))
        return data

    def save(self, path: str | Path, index: int = 0) -> Path:
        target = Path(path)
        if target.is_dir():
            target = target / f"{self.id or 'output'}-{index}"
        target.write_bytes(self.read(index))
        return target


class ComparisonOutput(models.ComparisonOutput, _Image):
    """One model's output in a comparison: `read()`, `save(path)` as a job's output."""

    def _source(self) -> tuple[str | None, str]:
        return self.url, self.content_type


class ComparisonResult(models.ComparisonResult, _Bound):
    """One model of a comparison: its job, status, cost, timing and readable outputs."""

    outputs: list[ComparisonOutput]  # type: ignore[assignment]

    def _bind(self, core: Core) -> None:
        super()._bind(core)
        for index, output in enumerate(self.outputs):
            output._bind(core)
            output._located(self.job_id, index)


class Comparison(models.ComparisonOut, _Bound):
    """A comparison: the models side by side, each one's job, cost and timing; the vote."""

    results: list[ComparisonResult]  # type: ignore[assignment]

    def _bind(self, core: Core) -> None:
        super()._bind(core)
        for result in self.results:
            result._bind(core)

    @property
    def done(self) -> bool:
        return self.status in COMPARISON_FINISHED


class ComparisonUpdate(BaseModel):
    """One event of `GET /v1/comparisons/{id}/stream` (`id` None when it was polled)."""

    id: int | None
    comparison: Comparison


# The JSON each result was parsed from (by the result's id), for as long as it lives.
_ANSWERS: dict[int, Any] = {}
R = TypeVar("R", bound=BaseModel)


def keep_answer(result: R, answer: Any) -> R:
    """Remember the JSON `result` was parsed from, for `as_json`, while `result` lives."""
    key = id(result)
    _ANSWERS[key] = answer
    weakref.finalize(result, _ANSWERS.pop, key, None)
    return result


def as_json(result: BaseModel) -> dict[str, Any]:
    """A result as the API's JSON answered it, for printing or storing it as it came
    (`json.dumps(as_json(job))`): the very answer it was parsed from, members, nulls and
    order; where `model_dump()` would add the optional members the answer left out (as
    their defaults), say `from_` for `from`, and put the members in the model's order.

    A result made otherwise (a part of one, `job.cost`; a copy) is dumped with what was
    set in it only, by the API's names."""
    answer = _ANSWERS.get(id(result))
    if answer is not None:
        kept: dict[str, Any] = copy.deepcopy(answer)
        return kept
    return result.model_dump(mode="json", by_alias=True, exclude_unset=True)


Upload = models.UploadOut
ModelList = models.ModelList
Quote = models.QuoteOut
CostReport = models.CostReportOut
Budget = models.BudgetOut
Usage = models.UsageOut
WebhookSecret = models.SecretOut
Delivery = models.DeliveryOut
DeliveryList = models.DeliveryList
