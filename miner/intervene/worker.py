"""Worker side of `miner ablate`: the head model loaded once per worker, and one task per block of held-out
sentences that runs every requested edit set over the block and returns each set's outputs in request order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from miner.intervene.hooks import SiteEdit, intervening
from miner.mining.batches import Batch, make_batches
from miner.mining.block_miner import BlockMiner
from miner.mining.executors import WorkerConfig
from miner.mining.extract import ExtractRequest, extract_block
from miner.model.heads import HeadModel, load_head_model
from miner.model.layout import model_max_length


@dataclass
class AblateState:
    """What a worker keeps between tasks."""

    loaded: HeadModel
    max_length: int
    batch_size: int

    def close(self) -> None:
        """Nothing to release (hooks live only inside a task); executors call it when they shut down."""


@dataclass
class AblateRequest:
    """One block of held-out sentences and the edit sets to run over it (an empty list = the clean run)."""

    block: int
    texts: list[str]
    edit_sets: list[list[SiteEdit]]


@dataclass
class AblateResult:
    """Per edit set (request order) a float32 [sentences, width] array of outputs, sentences in request order."""

    block: int
    outputs: list[np.ndarray]
    stats: dict[str, float] = field(default_factory=dict)


def ablate_task_name(job_task: str, folder: Path) -> str:
    """The head task of a job's ablate section (auto: from the folder's config.json)."""
    if job_task != "auto":
        return job_task
    import json

    from miner.model.heads import head_task

    return head_task(json.loads((Path(folder) / "config.json").read_text()))


def build_ablate_worker(cfg: WorkerConfig) -> AblateState:
    """Builder (WorkerConfig.builder): load the model with its head once per worker."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    job = cfg.job
    assert job.ablate is not None
    task = ablate_task_name(job.ablate.task, Path(cfg.model_folder))
    loaded = load_head_model(Path(cfg.model_folder), task, job.device, job.dtype, job.allow_pickle,
                             job.trust_remote_code, job.init, job.init_seed)
    return AblateState(loaded, min(job.max_length, model_max_length(loaded.config)), job.batch_size)


def batch_outputs(loaded: HeadModel, batch: Batch) -> torch.Tensor:
    """float32 [B, width] outputs of one batch under whatever edits are active (see `miner.intervene.effects`)."""
    dev = loaded.device
    ids = batch.input_ids.to(dev)
    att = batch.attention.to(dev)
    if loaded.task == "classification":
        return loaded.model(input_ids=ids, attention_mask=att).logits.float()
    if loaded.task == "causal_lm":
        logits = loaded.model(input_ids=ids, attention_mask=att, use_cache=False).logits.float()
        target = ids[:, 1:]
        mask = (att[:, 1:] * att[:, :-1]).to(torch.float32)
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none")
        n = mask.sum(1)
        return torch.where(n > 0, (ce * mask).sum(1) / n.clamp(min=1), torch.nan)[:, None]
    out = loaded.model(input_ids=ids, attention_mask=att, output_hidden_states=True)
    last = out.hidden_states[-1].float()
    w = att.to(torch.float32)[:, :, None]
    return (last * w).sum(1) / w.sum(1)


def ablate_task(state: AblateState, request: AblateRequest) -> AblateResult:
    """Task: every edit set's outputs for one block (batched as mining batches: length-sorted, padded)."""
    t0 = time.perf_counter()
    n = len(request.texts)
    batches, _ = make_batches(state.loaded.tokenizer, np.arange(n, dtype=np.int64), request.texts, state.max_length,
                              state.batch_size)
    outputs = []
    forward = 0.0
    with torch.inference_mode():
        for edits in request.edit_sets:
            rows: np.ndarray | None = None
            tf = time.perf_counter()
            with intervening(state.loaded.model, edits):
                for batch in batches:
                    vals = batch_outputs(state.loaded, batch).cpu().numpy()
                    if rows is None:
                        rows = np.zeros((n, vals.shape[1]), np.float32)
                    rows[batch.ids.numpy()] = vals
            forward += time.perf_counter() - tf
            outputs.append(rows if rows is not None else np.zeros((0, 1), np.float32))
    return AblateResult(request.block, outputs, {"sentences": float(n), "forward_seconds": forward,
                                                 "seconds": time.perf_counter() - t0})


@dataclass
class ProbeExtractRequest:
    """One block of a probe concept's sentences, the edit sets to extract them under (the first: clean), and the
    unit columns [lo, hi) of the probed tensor to return."""

    block: int
    extract: ExtractRequest
    edit_sets: list[list[SiteEdit]]
    columns: tuple[int, int]


def probe_extract_task(miner: BlockMiner, request: ProbeExtractRequest) -> AblateResult:
    """Task (mining workers, `build_block_miner`): the probed tensor's activations of the block's examples
    under each edit set, rows as `extract_block` orders them."""
    t0 = time.perf_counter()
    lo, hi = request.columns
    outputs = []
    for edits in request.edit_sets:
        with intervening(miner.loaded.model, edits):
            values = extract_block(miner, request.extract).values
        outputs.append(np.ascontiguousarray(values[:, lo:hi]))
    return AblateResult(request.block, outputs, {"seconds": time.perf_counter() - t0})
