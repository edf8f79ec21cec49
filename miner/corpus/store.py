"""Reading a prepared corpus back: block texts for mining (checked against the manifest) and rows by sentence id."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner.config import CorpusManifest
from miner.errors import InputError, first_line

RESTORE = "restore the corpus (the same inputs and options prepare the same shards)"


class DamagedShardError(InputError):
    """A corpus shard that is corrupt or unreadable: one message naming it and saying to restore the corpus."""

    def __init__(self, path: Path | str, problem: str, alternative: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        self.alternative = alternative
        super().__init__(f"{path}: {problem}; {RESTORE}{alternative}")

    def __reduce__(self) -> tuple:  # keeps the three fields through pickling (Ray)
        return type(self), (self.path, self.problem, self.alternative)

    @property
    def reason(self) -> str:
        """The shard and what is wrong with it, without the advice (what a run records for a skipped shard)."""
        return f"{self.path}: {self.problem}"


class ShardSlice(Protocol):
    """Consecutive rows of one shard (mining's BlockPlan is one)."""

    @property
    def shard(self) -> str: ...
    @property
    def row_start(self) -> int: ...
    @property
    def rows(self) -> int: ...


class CorpusReader:
    """Reads block texts from shards, keeping the current shard in memory.

    Each shard is checked against the SHA-256 in the corpus manifest when first read, so a damaged file is
    reported by name instead of feeding wrong or partial text into the queues.
    """

    SKIP = " or set skip_corrupt_shards: true"
    """The other way out, for a mining job: mine without the damaged shard."""

    def __init__(self, corpus_dir: Path, corpus: CorpusManifest) -> None:
        self.dir = corpus_dir
        self._sha = {s.file: s.sha256 for s in corpus.shards}
        self._name: str | None = None
        self._table: pa.Table | None = None

    def _load(self, shard: str) -> pa.Table:
        path = self.dir / shard
        try:  # an I/O error (a vanished mount) is not corruption: it stops the run and is never skipped
            data = path.read_bytes()
        except OSError as exc:
            raise OSError(exc.errno, f"cannot read corpus shard ({exc.strerror or exc})", str(path)) from None
        if hashlib.sha256(data).hexdigest() != self._sha.get(shard):
            raise DamagedShardError(path, "corrupt shard (SHA-256 differs from the corpus manifest)", self.SKIP)
        try:
            return pq.read_table(pa.BufferReader(data), columns=["sentence_id", "text"])
        except (pa.ArrowException, OSError) as exc:
            raise DamagedShardError(path, f"corrupt or unreadable shard ({exc})", self.SKIP) from None

    def block(self, plan: ShardSlice) -> tuple[np.ndarray, list[str]]:
        """(sentence ids, texts) of the plan's rows."""
        if plan.shard != self._name:
            self._table = None
            self._name = None
            self._table = self._load(plan.shard)
            self._name = plan.shard
        assert self._table is not None
        part = self._table.slice(plan.row_start, plan.rows)
        if part.num_rows != plan.rows:
            raise DamagedShardError(self.dir / plan.shard, "corrupt shard (fewer rows than the corpus manifest says)",
                                    self.SKIP)
        return part["sentence_id"].to_numpy(), part["text"].to_pylist()


def read_rows(corpus_dir: Path, corpus: CorpusManifest, ids: np.ndarray) -> pa.Table:
    """The corpus rows (every column) of sorted, distinct sentence ids, in id order; one chunk per shard read.

    Only shards holding some of the ids are read. A shard's ids are consecutive from its first_id, so its rows
    are taken by position; a shard that cannot be read, or whose rows are not the ids the manifest says, is one
    DamagedShardError naming it.
    Example: ids [3, 120, 121] over shards of 100 rows -> rows 3 of shard 0, rows 20 and 21 of shard 1.
    """
    ids = np.asarray(ids, dtype=np.int64)
    parts = []
    for shard in corpus.shards:
        lo, hi = np.searchsorted(ids, [shard.first_id, shard.first_id + shard.sentences])
        if hi <= lo:
            continue
        path = corpus_dir / shard.file
        wanted = ids[lo:hi]
        try:
            rows = pq.read_table(path).take(pa.array(wanted - shard.first_id))
            found = rows["sentence_id"].to_numpy()
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise DamagedShardError(path, f"corrupt or unreadable shard ({first_line(exc)})") from None
        if not np.array_equal(found, wanted):
            raise DamagedShardError(path, "corrupt shard (its sentence ids differ from the corpus manifest)")
        parts.append(rows)
    if not parts:
        return pa.table({"sentence_id": pa.array([], pa.int64()), "text": pa.array([], pa.string())})
    return pa.concat_tables(parts, promote_options="permissive")
