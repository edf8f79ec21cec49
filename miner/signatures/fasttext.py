"""fastText word vectors: the tokenizer, and training, checking, loading or reusing a run's skipgram model."""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner import atomic
from miner.config import CorpusManifest, VectorOptions
from miner.errors import InputError, first_line

if TYPE_CHECKING:
    import fasttext.FastText

log = logging.getLogger(__name__)

FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin (FASTTEXT_FILEFORMAT_MAGIC_INT32)
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters/digits, inner apostrophes kept, punctuation dropped (training and sentence
    vectors alike).

    >>> tokenize("Hello, World! It's 2021.")
    ['hello', 'world', "it's", '2021']
    """
    return _TOKEN.findall(text.lower())


CorpusFolders = Path | Sequence[Path]
"""A corpus folder, or a run's list of them read as one (miner.corpus.combined)."""


def _open(corpus: CorpusFolders) -> tuple[Path, CorpusManifest]:
    from miner.corpus.combined import open_corpora

    return open_corpora([Path(corpus)] if isinstance(corpus, (str, Path)) else [Path(c) for c in corpus])


def sample_corpus_texts(corpus: CorpusFolders, max_sentences: int, seed: int = 0,
                        skip: frozenset[str] = frozenset()) -> list[str]:
    """Every corpus sentence's text, or a seeded uniform sample of `max_sentences` of them, in id order.

    Shards in `skip` (skipped as corrupt by the miner) are not read; the sample of the others is unchanged.
    """
    corpus_dir, manifest = _open(corpus)
    total = manifest.sentences
    keep = None
    if total > max_sentences:
        keep = np.sort(np.random.default_rng(seed).choice(total, max_sentences, replace=False))
    texts: list[str] = []
    offset = 0
    for shard in manifest.shards:
        if shard.file in skip:
            offset += shard.sentences
            continue
        try:
            column = pq.read_table(corpus_dir / shard.file, columns=["text"])["text"]
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{corpus_dir / shard.file}: corrupt or unreadable shard ({first_line(exc)}); restore "
                             "the corpus (the same inputs and options prepare the same shards)") from None
        if keep is None:
            texts.extend(column.to_pylist())
        else:
            lo, hi = np.searchsorted(keep, [offset, offset + shard.sentences])
            texts.extend(column.take(pa.array(keep[lo:hi] - offset)).to_pylist())
        offset += shard.sentences
    return texts


def train_fasttext(corpus: CorpusFolders, out_path: Path, options: VectorOptions,
                   skip: frozenset[str] = frozenset()) -> Path:
    """Train an unsupervised skipgram model on the corpus (sampled) and save it atomically to out_path.

    Subword n-grams stay on (minn..maxn), so words the sample never saw still get vectors.

    A sidecar `<out_path>.json` records the corpus fingerprint and the options, so the model can be reused.
    fastText with more than one thread is not bit-reproducible (Hogwild updates); use thread=1 for that.
    """
    import fasttext

    started = time.monotonic()
    out_path = Path(out_path)
    corpus_dir, manifest = _open(corpus)
    fingerprint = manifest.fingerprint
    texts = sample_corpus_texts(corpus, options.max_sentences, options.seed, skip)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".fasttext-") as tmp:
        train_file = Path(tmp) / "train.txt"
        n_tokens = 0
        with train_file.open("w", encoding="utf-8") as fh:
            for text in texts:
                tokens = tokenize(text)
                n_tokens += len(tokens)
                if tokens:
                    fh.write(" ".join(tokens) + "\n")
        threads = training_threads(options.thread, n_tokens)
        lr = options.lr
        model = None
        while model is None:
            try:
                model = fasttext.train_unsupervised(
                    str(train_file), model="skipgram", dim=options.dim, epoch=options.epoch,
                    minCount=options.min_count, minn=options.minn, maxn=options.maxn, bucket=options.bucket,
                    ws=options.ws, lr=lr, thread=threads, verbose=0)
            except (RuntimeError, ValueError) as exc:
                if threads > 1 and "NaN" in str(exc):
                    # Hogwild threads can overshoot the token count, drive the decayed learning rate
                    # negative and diverge; one thread cannot, so the retry is the sequential schedule.
                    log.warning("fastText diverged with %d threads; retrying with one", threads)
                    threads = 1
                    continue
                if "NaN" in str(exc) and lr > options.lr / 2**LR_HALVINGS:
                    # a small corpus can diverge even on one thread (seen on CI's machine, not on ours, with
                    # 2,500 and with 46,000 tokens, at lr 0.05 and 0.025): the same training at half the
                    # learning rate, at most LR_HALVINGS times
                    log.warning("fastText diverged at lr %g; retrying at %g", lr, lr / 2)
                    lr /= 2
                    continue
                raise InputError(f"{corpus_dir}: fastText training failed ({str(exc).strip()}); "
                                 "the corpus may be too small for min_count") from None
        tmp_model = Path(tmp) / "model.bin"
        model.save_model(str(tmp_model))
        os.replace(tmp_model, out_path)
    info = {"corpus_fingerprint": fingerprint, "options": _training_options(options), "sentences": len(texts),
            "skipped_shards": sorted(skip),
            "tokens": n_tokens, "threads": threads, "lr": lr, "seconds": round(time.monotonic() - started, 2)}
    atomic.write_json(Path(str(out_path) + ".json"), info)
    log.info("fastText: %d sentences, %d tokens, %.1f s -> %s", len(texts), n_tokens, info["seconds"], out_path)
    return out_path


LR_HALVINGS = 5
"""A one-thread training that diverges is retried at half the learning rate at most this many times."""

TOKENS_PER_THREAD = 250_000
"""Training tokens each extra fastText thread needs: below it the threads' shared progress counter overshoots."""


def training_threads(requested: int, tokens: int) -> int:
    """Threads to train fastText with: one per TOKENS_PER_THREAD training tokens, at least 1, at most requested.

    >>> training_threads(2, 10_000), training_threads(2, 600_000), training_threads(8, 600_000)
    (1, 2, 2)
    """
    return max(1, min(requested, tokens // TOKENS_PER_THREAD))


def _training_options(options: VectorOptions) -> dict:
    return options.model_dump(mode="json", exclude={"model", "metric", "thread", "cache", "cache_dir"})


def check_fasttext_file(path: Path) -> None:
    """Walk a fastText .bin's layout (header, args, dictionary, matrices) without loading it; InputError
    naming the path unless the file is a complete model. fastText itself may read a truncated file for
    minutes, allocate without bound, or accept missing matrix rows, so this runs first.

    Layout: int32 magic, int32 version; args (12 int32, 1 float64); dictionary (int32 size, nwords, nlabels;
    int64 ntokens, pruneidx_size; size x (word NUL, int64 count, int8 type); pruneidx_size x 2 int32);
    bool quant; input matrix (int64 rows, cols; floats); bool qout; output matrix (same).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such fastText model file")
    bad = InputError(f"{path}: not a fastText model (.bin file expected)")
    truncated = InputError(f"{path}: truncated or damaged fastText model")
    with path.open("rb") as fh:
        if path.stat().st_size < 100:
            raise bad
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            magic, version = struct.unpack_from("<ii", mm, 0)
            if magic != FASTTEXT_MAGIC or not 11 <= version <= 12:
                raise bad
            args = struct.unpack_from("<12id", mm, 8)
            dim = args[0]
            off = 8 + 56
            try:
                size, _nwords, _nlabels, _ntokens, prune = struct.unpack_from("<iiiqq", mm, off)
                off += 28
                if size < 0 or prune < -1 or dim <= 0:
                    raise truncated
                for _ in range(size):
                    end = mm.find(b"\0", off)
                    if end < 0:
                        raise truncated
                    off = end + 1 + 9
                off += 8 * max(prune, 0)
                quant = mm[off]
                if quant:  # quantized (.ftz): product-quantizer layout, leave it to fastText
                    return
                rows, cols = struct.unpack_from("<qq", mm, off + 1)
                off += 17 + 4 * rows * cols
                out_rows, out_cols = struct.unpack_from("<qq", mm, off + 1)
                off += 17 + 4 * out_rows * out_cols
            except (struct.error, IndexError):
                raise truncated from None
            if cols != dim or off != len(mm):
                raise truncated


def load_fasttext(path: Path) -> fasttext.FastText._FastText:
    """Load a fastText .bin model; one InputError naming the path if it is missing or not a model."""
    import fasttext

    check_fasttext_file(path)
    try:
        return fasttext.load_model(str(path))
    except (ValueError, RuntimeError, MemoryError) as exc:
        raise InputError(f"{path}: not a usable fastText model ({str(exc).strip()})") from None


def _sidecar_matches(model_path: Path, fingerprint: str, options: VectorOptions, skip: frozenset[str]) -> bool:
    sidecar = Path(str(model_path) + ".json")
    if not (Path(model_path).exists() and sidecar.exists()):
        return False
    try:
        info = json.loads(sidecar.read_text())
    except ValueError:
        return False
    return (info.get("corpus_fingerprint") == fingerprint and info.get("options") == _training_options(options)
            and info.get("skipped_shards", []) == sorted(skip))


def cache_folder(options: VectorOptions) -> Path:
    """Where trained models are shared: options.cache_dir, else $MINER_CACHE_DIR/fasttext, else
    ~/.cache/neuron-miner/fasttext."""
    if options.cache_dir is not None:
        return Path(options.cache_dir)
    root = os.environ.get("MINER_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "neuron-miner") / "fasttext"


def cache_key(fingerprint: str, options: VectorOptions, skip: frozenset[str]) -> str:
    """The cached model's name: a hash of the corpus fingerprint, the training options and the skipped shards.

    >>> key = cache_key("abc", VectorOptions(), frozenset())
    >>> len(key), key == cache_key("abc", VectorOptions(cache_dir="/elsewhere"), frozenset())
    (24, True)
    """
    blob = json.dumps({"corpus": fingerprint, "options": _training_options(options), "skipped": sorted(skip)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _place(cached: Path, model_path: Path) -> None:
    """The cached model (and its sidecar) at model_path: a hard link where the file system allows, else a copy;
    each atomically (a temporary name, then a rename)."""
    for src, dst in ((cached, Path(model_path)), (Path(str(cached) + ".json"), Path(str(model_path) + ".json"))):
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def ensure_fasttext(corpus: CorpusFolders, model_path: Path, options: VectorOptions,
                    skip: frozenset[str] = frozenset()) -> Path:
    """options.model if set; else model_path if its sidecar matches the corpus and options; else the model of the
    shared cache (`cache_folder`, by `cache_key`), trained there first when missing (atomically) and then linked
    or copied to model_path. So fastText trains once per corpus and options, for every run of that corpus."""
    if options.model is not None:
        return Path(options.model)
    fingerprint = _open(corpus)[1].fingerprint
    if _sidecar_matches(Path(model_path), fingerprint, options, skip):
        return Path(model_path)
    if not options.cache:
        return train_fasttext(corpus, model_path, options, skip)
    cached = cache_folder(options) / cache_key(fingerprint, options, skip) / "model.bin"
    if _sidecar_matches(cached, fingerprint, options, skip):
        log.info("fastText: the cached model of this corpus and options (%s)", cached)
    else:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("fastText cache %s not writable (%s); training into the run", cached.parent, exc.strerror)
            return train_fasttext(corpus, model_path, options, skip)
        train_fasttext(corpus, cached, options, skip)
    _place(cached, Path(model_path))
    return Path(model_path)
