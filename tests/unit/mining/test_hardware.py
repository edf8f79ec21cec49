"""GPU correctness guards on CPU: hardware identities, resume and worker checks, TF32 off, the memory estimate
(against the real buffers and temporaries of the queues and a real forward pass) and the window fit."""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from miner.errors import ConfigError, MinerError
from miner.mining import native
from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner
from miner.mining.hardware import (
    GIB,
    HardwareIdentity,
    check_same_hardware,
    check_workers_agree,
    disable_tf32,
    estimate_mining_memory,
    fit_window,
    identity_of,
    result_identity,
    tf32_disabled,
)
from miner.mining.topn import SENTINEL, Candidates, TopNQueues, WindowedQueues, encode_keys
from miner.model.layout import unit_layout
from miner.model.loading import load_model
from tests.support.builders import SENTENCES, tiny_model

H200 = HardwareIdentity("cuda", "bfloat16", "NVIDIA H200", "2.13.0", "12.8")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("bert"), "bert")


@pytest.mark.parametrize(("dtype", "expected"), [("float32", "float32"), ("bfloat16", "bfloat16")])
def test_identity_of_a_real_model_on_cpu(bert: Path, dtype: str, expected: str) -> None:
    identity = identity_of(load_model(bert, "cpu", dtype))
    assert identity == HardwareIdentity("cpu", expected, None, torch.__version__, torch.version.cuda)
    assert result_identity(identity) == {"device": "cpu", "dtype": expected}


def test_identity_round_trips_through_json() -> None:
    import json

    for identity in (H200, HardwareIdentity("cpu", "float32", None, "2.13.0+cpu", None)):
        assert HardwareIdentity.from_dict(json.loads(json.dumps(identity.as_dict()))) == identity
    with pytest.raises(ValueError, match="dtype"):
        HardwareIdentity.from_dict({"device": "cpu", "gpu_name": None, "torch_version": "2", "cuda_version": None})


def test_resume_on_other_hardware_is_refused_with_one_line(tmp_path: Path) -> None:
    saved = HardwareIdentity("cuda", "bfloat16", "NVIDIA A100-SXM4-80GB", "2.12.0", "12.8").as_dict()
    with pytest.raises(ConfigError) as info:
        check_same_hardware(saved, H200, tmp_path, allow=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: ")
    assert "gpu_name: NVIDIA A100-SXM4-80GB -> NVIDIA H200" in message
    assert "torch_version: 2.12.0 -> 2.13.0" in message and "cuda_version" not in message  # only what differs
    assert "--allow-other-hardware" in message


def test_resume_on_other_hardware_allowed_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    saved = {**H200.as_dict(), "gpu_name": "NVIDIA H100 80GB HBM3"}
    with caplog.at_level(logging.WARNING, logger="miner.mining.hardware"):
        check_same_hardware(saved, H200, tmp_path, allow=True)
    assert "gpu_name: NVIDIA H100 80GB HBM3 -> NVIDIA H200" in caplog.text


def test_same_hardware_and_older_checkpoints_pass(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_same_hardware(H200.as_dict(), H200, tmp_path, allow=False)
        check_same_hardware(None, H200, tmp_path, allow=False)  # written before identities were recorded
        check_same_hardware({"device": "cuda", "dtype": "bfloat16"}, H200, tmp_path, allow=False)  # fewer fields
    assert caplog.text == ""
    with pytest.raises(ConfigError, match="dtype: float32 -> bfloat16"):
        check_same_hardware({"device": "cuda", "dtype": "float32"}, H200, tmp_path, allow=False)


def test_workers_that_compute_differently_are_refused() -> None:
    cpu = HardwareIdentity("cpu", "float32", None, "2.13.0", "12.8")
    for other, what in ((cpu, "device cpu, cuda"), (HardwareIdentity("cuda", "float32", "NVIDIA H200", "2.13.0", "12.8"),
                                                     "dtype bfloat16, float32")):
        with pytest.raises(MinerError, match=what) as info:
            check_workers_agree([H200, other])
        assert "\n" not in str(info.value)


def test_workers_on_different_gpus_are_combined(caplog: pytest.LogCaptureFixture) -> None:
    h100 = HardwareIdentity("cuda", "bfloat16", "NVIDIA H100", "2.13.0", "12.8")
    with caplog.at_level(logging.WARNING):
        combined = check_workers_agree([H200, h100, H200])
    assert combined == HardwareIdentity("cuda", "bfloat16", "NVIDIA H100, NVIDIA H200", "2.13.0", "12.8")
    assert check_workers_agree([h100, H200]) == combined  # the same whatever the actors' order
    assert "gpu_name" in caplog.text


@pytest.fixture
def tf32_flags() -> Iterator[None]:
    """Restore the process's fp32 precision flags after a test changes them."""
    matmul, conv, rnn = torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn  # type: ignore[attr-defined]
    saved = (matmul.fp32_precision, conv.fp32_precision, rnn.fp32_precision)
    yield
    matmul.fp32_precision, conv.fp32_precision, rnn.fp32_precision = saved


def test_disable_tf32_turns_every_flag_off_without_warnings(tf32_flags: None) -> None:
    matmul, conv, rnn = torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn  # type: ignore[attr-defined]
    matmul.fp32_precision = conv.fp32_precision = rnn.fp32_precision = "tf32"
    assert not tf32_disabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning from the API used
        disable_tf32()
        disable_tf32()  # idempotent
    assert (matmul.fp32_precision, conv.fp32_precision, rnn.fp32_precision) == ("ieee", "ieee", "ieee")
    assert matmul.allow_tf32 is False and tf32_disabled()  # the legacy cuBLAS flag reads the same


def buffer_bytes(queue: TopNQueues) -> int:
    """nbytes of every tensor a queue object holds."""
    return sum(v.nbytes for v in vars(queue).values() if isinstance(v, torch.Tensor))


class PeakBytes(TorchDispatchMode):
    """The peak bytes of the storages that operations allocate while the mode is on: every new storage an
    operation returns (views and in-place results are not new) counts until its tensor is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        seen = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs or {}))}
        out = func(*args, **(kwargs or {}))
        for t in _tensors(out):
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, storage.nbytes())
        return out


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def random_keys(rows: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    scores = torch.from_numpy(rng.standard_normal((rows, width)).astype(np.float32))
    ids = torch.from_numpy(rng.permutation(rows * width).reshape(rows, width).astype(np.int64))
    return encode_keys(scores, ids)


# a small layout: 24 units, both directions (48 queue rows), N = 40, window 24, batch 8
UNITS, N, DIRECTIONS, WINDOW, BATCH = 24, 40, 2, 24, 8


def test_queue_buffers_are_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    est = estimate_mining_memory(UNITS, N, DIRECTIONS, WINDOW, BATCH, 16, [UNITS], 4)
    rows = DIRECTIONS * UNITS
    if native.available():  # the CPU's compiled merge needs no spare columns: half the lane queues
        lane = TopNQueues(rows, N)
        assert buffer_bytes(lane) == (est.persistent_queues - rows * 8) // 2 + rows * 8
    monkeypatch.setenv("MINER_NATIVE", "0")  # the estimate's device path (torch, as on a GPU)
    assert buffer_bytes(TopNQueues(rows, N)) == est.persistent_queues
    assert buffer_bytes(WindowedQueues(rows, N, WINDOW)) == est.window_queue


def test_flush_temporaries_are_bounded_by_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush that cuts every row but one (the costly case: the rows cut are copied out first), by torch.topk as
    on a GPU (the estimate's device path; the CPU's compiled cut allocates one scratch row per thread)."""
    monkeypatch.setenv("MINER_NATIVE", "0")
    rng = np.random.default_rng(0)
    rows = DIRECTIONS * UNITS
    q = WindowedQueues(rows, N, WINDOW)
    full = N + WINDOW
    units = torch.cat([torch.zeros(1, dtype=torch.int64), torch.arange(1, rows).repeat_interleave(full)])
    keys = random_keys(1, units.numel(), rng)[0]
    q.append(units, keys, torch.zeros_like(keys))
    assert int(q.count[0]) == 1 and int(q.count[1:].min()) == full
    with PeakBytes() as allocated:
        q.flush()
    assert int(q.count.max()) == N
    est = estimate_mining_memory(UNITS, N, DIRECTIONS, WINDOW, BATCH, 16, [UNITS], 4)
    assert 0.9 * est.flush <= allocated.peak <= est.flush


def test_lane_merge_temporaries_are_bounded_by_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's dense entries [rows, N] merged into full lane queues (top-k over [rows, 2N], as on a GPU)."""
    monkeypatch.setenv("MINER_NATIVE", "0")
    rng = np.random.default_rng(1)
    rows = DIRECTIONS * UNITS
    lane = TopNQueues(rows, N)
    lane.merge(Candidates(None, random_keys(rows, N, rng), torch.zeros((rows, N), dtype=torch.int64)))
    block = WindowedQueues(rows, N, WINDOW)
    for _ in range(3):  # three batches' slabs, flushed back to N per row
        block.add_slab(random_keys(rows, BATCH * 2, rng), torch.zeros((rows, BATCH * 2), dtype=torch.int64))
    found = block.finish()
    assert found.dense and found.keys.shape == (rows, N) and bool((found.keys != SENTINEL).all())
    with PeakBytes() as allocated:
        lane.merge(found)
    est = estimate_mining_memory(UNITS, N, DIRECTIONS, WINDOW, BATCH, 16, [UNITS], 4)
    used = found.keys.nbytes + found.payload.nbytes + allocated.peak
    assert 0.9 * est.merge <= used <= est.merge


@pytest.mark.parametrize("sites", [["hidden"], ["hidden", "mlp"]])
def test_activations_of_a_real_forward_are_the_estimate(bert: Path, sites: list[str]) -> None:
    loaded = load_model(bert, "cpu", "float32")
    layout = unit_layout(loaded.config, sites, None)
    miner = BlockMiner(loaded, layout, 5, batch_size=len(SENTENCES))
    (batch,), _ = make_batches(loaded.tokenizer, np.arange(len(SENTENCES)), SENTENCES, 64, len(SENTENCES))
    tensors = miner.forward(batch)
    miner.close()
    b, t = batch.input_ids.shape
    est = estimate_mining_memory(layout.n_units, 5, 2, 16 * b, b, t, [w for _, _, w in layout.layers], 4)
    assert sum(x.nbytes for x in tensors) == est.activations
    bf16 = estimate_mining_memory(layout.n_units, 5, 2, 16 * b, b, t, [w for _, _, w in layout.layers], 2)
    assert bf16.activations == est.activations // 2 + b * t * max(w for _, _, w in layout.layers) * 4  # + f32 copy


LAYOUT = (9216 + 36864, 10_000, 2, 1024, 64, 128, [768] * 12 + [3072] * 12, 2)  # BERT-base hidden + mlp, bf16


def test_fit_window_keeps_a_window_that_fits() -> None:
    assert fit_window(*LAYOUT, free_bytes=139 * GIB) == 1024
    assert fit_window(*LAYOUT) == 1024  # CPU without free_bytes: not checked
    assert fit_window(*LAYOUT[:4], 2048, *LAYOUT[5:], free_bytes=139 * GIB) == 2048  # never below batch_size


def test_fit_window_shrinks_to_the_largest_window_that_fits(caplog: pytest.LogCaptureFixture) -> None:
    free = 87 * GIB
    usable = free * 0.9
    with caplog.at_level(logging.WARNING, logger="miner.mining.hardware"):
        window = fit_window(*LAYOUT, free_bytes=free)
    assert "window lowered from 1024 to" in caplog.text
    batch = LAYOUT[4]
    assert window % batch == 0 and batch <= window < 1024

    def need(w: int) -> int:
        return estimate_mining_memory(*LAYOUT[:3], w, *LAYOUT[4:]).total

    assert need(window) <= usable < need(window + batch)  # brute force: the next multiple would not fit
    assert fit_window(*LAYOUT, free_bytes=2 * free, share=0.5) == window  # half of a GPU shared by two actors


def test_fit_window_refuses_a_layout_that_cannot_fit() -> None:
    with pytest.raises(ConfigError) as info:
        fit_window(*LAYOUT, free_bytes=40 * GIB)
    message = str(info.value)
    assert "\n" not in message and message.startswith("memory: mining 46080 units (N = 10000")
    assert "needs 79.5 GiB" in message and "36.0 GiB of 40.0 GiB free" in message
    assert "persistent queues 27.5" in message and "flush 35.7" in message
    assert "lower top_n, mine fewer sites or layers, lower batch_size, or run fewer workers per GPU" in message
