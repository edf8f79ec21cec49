"""Several prepared corpora read as one: a job's `corpus:` list (a run grown by appending a second corpus).

The corpora's sentence ids must follow on from each other (prepare the second one with `miner corpus prepare
--after FIRST`), so every id in a run names one sentence and every table keeps its meaning. The combined manifest
lists the shards of all parts in id order; a shard of a later part is named by its absolute path, so the rule
every reader follows (`corpus folder / shard.file`) finds it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from miner.config import CorpusManifest
from miner.corpus.prepare import load_corpus
from miner.errors import InputError


def corpus_end(manifest: CorpusManifest) -> int:
    """The id after the corpus's last sentence (where a corpus prepared `--after` it starts)."""
    last = manifest.shards[-1]
    return last.first_id + last.sentences


def combined_fingerprint(fingerprints: Sequence[str]) -> str:
    """A list of one corpus keeps that corpus's fingerprint; a longer list hashes its parts in order.

    >>> combined_fingerprint(["abc"])
    'abc'
    >>> combined_fingerprint(["abc", "def"]) == combined_fingerprint(["def", "abc"])
    False
    """
    if len(fingerprints) == 1:
        return fingerprints[0]
    return hashlib.sha256(("corpora:" + ",".join(fingerprints)).encode()).hexdigest()


def open_corpora(folders: Sequence[Path]) -> tuple[Path, CorpusManifest]:
    """(folder, manifest) to read the corpora in `folders` as one, in that order; one InputError naming the
    corpus whose ids do not follow on, whose columns differ, or that is listed twice."""
    if not folders:
        raise InputError("corpus: the list of corpora is empty")
    first = Path(folders[0])
    manifests = [load_corpus(Path(f)) for f in folders]
    if len(manifests) == 1:
        return first, manifests[0]
    seen: set[Path] = set()
    shards = []
    domains: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    labels: dict[str, Counter[str]] = {}
    expected = manifests[0].shards[0].first_id
    previous = first
    for folder, m in zip(folders, manifests):
        folder = Path(folder)
        if folder.resolve() in seen:
            raise InputError(f"{folder}: listed twice in the job's corpus list")
        seen.add(folder.resolve())
        if m.columns != manifests[0].columns:
            missing = [c for c in manifests[0].columns if c not in m.columns]
            extra = [c for c in m.columns if c not in manifests[0].columns]
            raise InputError(f"{folder}: its columns differ from {first}'s (missing: {', '.join(missing) or '-'}; "
                             f"extra: {', '.join(extra) or '-'}; order: {', '.join(m.columns)})")
        start = m.shards[0].first_id
        if start != expected:
            raise InputError(f"{folder}: its sentence ids start at {start:,}, not at {expected:,} where the corpora "
                             f"before it end; prepare it with `miner corpus prepare ... --after {previous}`")
        for s in m.shards:
            shards.append(s if folder == first else s.model_copy(update={"file": str((folder / s.file).resolve())}))
        expected = corpus_end(m)
        previous = folder
        domains.update(m.domains)
        dropped.update(m.dropped)
        for key, values in m.labels.items():
            labels.setdefault(key, Counter()).update(values)
    return first, manifests[0].model_copy(update={
        "fingerprint": combined_fingerprint([m.fingerprint for m in manifests]),
        "inputs": [i for m in manifests for i in m.inputs],
        "shards": shards,
        "sentences": sum(m.sentences for m in manifests),
        "tokens": sum(m.tokens for m in manifests),
        "domains": dict(sorted(domains.items())),
        "labels": {k: dict(v.most_common()) for k, v in sorted(labels.items())},
        "dropped": dict(sorted(dropped.items())),
        "parts": [{"path": str(Path(f).resolve()), "fingerprint": m.fingerprint, "sentences": m.sentences}
                  for f, m in zip(folders, manifests)],
    })
