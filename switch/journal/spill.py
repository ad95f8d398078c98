"""The spill file: where journal records go while Postgres cannot take them.

When a batch cannot be committed because the database is unreachable, the
writer appends the batch here, fsyncs, and only then tells its callers the
records are durable. When the database answers again the file is replayed
into it in one transaction, then deleted. Replay is idempotent (intakes by
primary key, outcomes by (txn_id, ended_at, state, event), reversals by
txn_id) and each file's segment id is recorded in `spill_replayed` in the same
transaction, so a file is applied exactly once even if the process dies
between the commit and the delete.

One JSON line per queued write (msgspec), so a torn last line after a crash
is detected and dropped: it was never acknowledged.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import msgspec

from .records import Intake, Outcome, Reversal, ReversalUpdate

log = logging.getLogger("airswitch.journal")


class SpilledWrite(msgspec.Struct, omit_defaults=True):
    intake: Intake | None = None
    outcome: Outcome | None = None
    reversal: Reversal | None = None
    update: ReversalUpdate | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SpilledWrite)


class SpillFile:
    """One segment: `spill-<segment>.jsonl` in the spill directory."""

    def __init__(self, path: Path):
        self.path = path
        self.segment = path.stem.removeprefix("spill-")

    @classmethod
    def create(cls, directory: Path) -> "SpillFile":
        directory.mkdir(parents=True, exist_ok=True)
        spill = cls(directory / f"spill-{uuid.uuid4().hex}.jsonl")
        spill.path.touch()
        _fsync_directory(directory)
        return spill

    @classmethod
    def existing(cls, directory: Path) -> list["SpillFile"]:
        if not directory.is_dir():
            return []
        return [cls(path) for path in sorted(directory.glob("spill-*.jsonl"), key=os.path.getmtime)]

    def append(self, writes: list[SpilledWrite]) -> None:
        """Durable when this returns (written and fsynced); raises OSError otherwise."""
        data = b"".join(_encoder.encode(write) + b"\n" for write in writes)
        with open(self.path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[SpilledWrite]:
        writes = []
        lines = self.path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                writes.append(_decoder.decode(line))
            except msgspec.DecodeError:
                if number == len(lines):  # a torn last line: the crash came before its fsync
                    log.warning("spill %s: dropped a torn last line (never acknowledged)", self.path.name)
                    continue
                raise
        return writes

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        _fsync_directory(self.path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
