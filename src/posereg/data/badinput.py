"""The bad-input policy: clear errors that name the file and record, or skips that are counted.

Every loader in :mod:`posereg.data` follows one rule: a problem with the *file as a whole*
(unreadable json, duplicate ids, a path escaping the dataset root, nothing usable left) raises
:class:`BadInputError`; a problem with *one record* (a malformed annotation, a missing image) is
skipped and counted in a :class:`LoadReport`, or raises with ``strict=True``; a record that is
kept with a documented change (a keypoint outside the image dropped, a missing ``area`` filled)
is counted there as an adjustment. The table of cases
is in docs/data.md ("Bad input policy").
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BadInputError", "SkippedRecord", "LoadReport", "worker_message"]

logger = logging.getLogger("posereg.data")


class BadInputError(ValueError):
    """A dataset file or record that posereg refuses to use.

    The message always reads ``<file>: <record>: <what is wrong>``, followed by what to do.

    Arguments:
        file: the file at fault (json, image, .mat, ...).
        record: which record, e.g. ``"annotation id 442619 (image id 785)"``; empty if the whole
            file is at fault.
        problem: what is wrong and, where possible, what was expected and what to do.
    """

    def __init__(
        self, file: str | Path, record: str | None = None, problem: str | None = None
    ) -> None:
        if record is None and problem is None:
            # one argument: a finished message, as DataLoader builds when it re-raises a
            # worker's error in the main process: "Caught BadInputError in DataLoader worker
            # process 0.\nOriginal Traceback ...", ending with the original message (which
            # keeps the file and record); the error carries that message alone
            message = worker_message(str(file))
            self.file, self.record, self.problem = "", "", message
            super().__init__(message)
            return
        self.file = str(file)
        self.record = record or ""
        self.problem = problem or ""
        where = f"{self.file}: {self.record}" if self.record else self.file
        super().__init__(f"{where}: {self.problem}")

    def __reduce__(self):  # keeps the fields when the error crosses a process boundary
        if not self.file:  # a finished message (see __init__)
            return (type(self), (self.problem,))
        return (type(self), (self.file, self.record, self.problem))


def worker_message(message: str) -> str:
    """The original one-line message of an error that a DataLoader re-raised from a worker.

    DataLoader cannot send the exception itself; it re-raises its type with the message
    ``"Caught T in DataLoader worker process N.\nOriginal Traceback (most recent call last):
    ... module.T: MESSAGE"``. Returns MESSAGE, or ``message`` unchanged when it is not one.
    """
    head, _, rest = message.partition("\n")
    caught = re.match(r"Caught (\w+) ", head)
    if caught is None or not rest.startswith("Original Traceback"):
        return message
    # the last line "package.module.T: " starts the message (an earlier one would be a cause)
    starts = list(re.finditer(rf"^(?:[\w.]+\.)?{caught.group(1)}: ", rest, re.MULTILINE))
    return rest[starts[-1].end() :].strip() if starts else message


@dataclass(frozen=True)
class SkippedRecord:
    """One record a loader left out, and why."""

    file: str
    record: str
    reason: str
    detail: str = ""


@dataclass
class LoadReport:
    """What a loader read, kept and skipped.

    Attributes:
        source: the file(s) read.
        num_records: records seen (annotations or detections).
        num_instances: instances kept.
        skipped: one entry per record left out.
        adjusted: one entry per change to a record that was kept (``reason`` says what).
    """

    source: str
    num_records: int = 0
    num_instances: int = 0
    skipped: list[SkippedRecord] = field(default_factory=list)
    adjusted: list[SkippedRecord] = field(default_factory=list)

    def skip(
        self, file: str | Path, record: str, reason: str, detail: str = "", strict: bool = False
    ) -> None:
        """Count a skipped record, or raise :class:`BadInputError` when ``strict``."""
        if strict:
            raise BadInputError(file, record, f"{reason}{': ' + detail if detail else ''}")
        self.skipped.append(SkippedRecord(str(file), record, reason, detail))

    def adjust(self, file: str | Path, record: str, what: str, detail: str = "") -> None:
        """Count a change made to a kept record (never raises: the record is usable)."""
        self.adjusted.append(SkippedRecord(str(file), record, what, detail))

    def adjustments(self) -> dict[str, int]:
        """Number of changes per kind, e.g. ``{"keypoints outside the image dropped": 2}``."""
        return dict(Counter(s.reason for s in self.adjusted))

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def counts(self) -> dict[str, int]:
        """Number of skipped records per reason."""
        return dict(Counter(s.reason for s in self.skipped))

    def summary(self, max_examples: int = 3) -> str:
        """A few lines for the run log: kept, skipped per reason, with example records."""
        lines = [
            f"{self.source}: {self.num_instances} instances kept from {self.num_records} records, "
            f"{self.num_skipped} skipped"
        ]
        for reason, n in sorted(self.counts().items(), key=lambda kv: -kv[1]):
            examples = [s for s in self.skipped if s.reason == reason][:max_examples]
            shown = "; ".join(
                f"{s.record}{' (' + s.detail + ')' if s.detail else ''}" for s in examples
            )
            lines.append(f"  {reason}: {n} (e.g. {shown})")
        for what, n in sorted(self.adjustments().items(), key=lambda kv: -kv[1]):
            examples = [s for s in self.adjusted if s.reason == what][:max_examples]
            shown = "; ".join(
                f"{s.record}{' (' + s.detail + ')' if s.detail else ''}" for s in examples
            )
            lines.append(f"  kept, {what}: {n} (e.g. {shown})")
        return "\n".join(lines)

    def log(self) -> None:
        """Log the summary: INFO when nothing was skipped, WARNING otherwise."""
        level = logging.WARNING if self.skipped or self.adjusted else logging.INFO
        logger.log(level, "%s", self.summary())
