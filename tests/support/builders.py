"""Builders for tests: tiny random models from config (saved as real HF folders) and small corpora."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from miner.model.loading import bundled_minilm

SENTENCES = [
    "The cat sat on the mat and looked at the bird.",
    "Stocks fell sharply after the central bank raised interest rates.",
    "lol im so happy right now haha",
    "The United States won three gold medals at the Olympic games.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "I hated this movie, the plot made no sense at all.",
    "To be, or not to be, that is the question.",
    "The senator promised to cut taxes for working families.",
    "She quickly ran to the station but missed the last train.",
    "Water boils at one hundred degrees Celsius at sea level.",
]


def byte_bpe_tokenizer(folder: Path, bos: bool) -> None:
    """Train a tiny byte-level BPE tokenizer (GPT-2/Llama style) on SENTENCES and save it into folder."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 5, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)


def tiny_model(folder: Path, arch: str = "bert", seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    """Save a tiny random model of an architecture (bert, gpt2, llama) with a tokenizer into folder."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertModel,
        GPT2Config,
        GPT2Model,
        LlamaConfig,
        LlamaModel,
        RobertaConfig,
        RobertaModel,
    )

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if arch == "bert":
        tok = AutoTokenizer.from_pretrained(bundled_minilm())
        tok.save_pretrained(folder)
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=4 * hidden, max_position_embeddings=64)
        model = BertModel(cfg)
    elif arch == "roberta":
        tok = AutoTokenizer.from_pretrained(bundled_minilm())
        tok.save_pretrained(folder)
        cfg = RobertaConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=4, intermediate_size=4 * hidden, max_position_embeddings=66,
                            pad_token_id=tok.pad_token_id)
        model = RobertaModel(cfg)
    elif arch == "distilbert":
        tok = AutoTokenizer.from_pretrained(bundled_minilm())
        tok.save_pretrained(folder)
        cfg = DistilBertConfig(vocab_size=tok.vocab_size, dim=hidden, n_layers=layers, n_heads=4, hidden_dim=4 * hidden,
                               max_position_embeddings=64)
        model = DistilBertModel(cfg)
    elif arch == "gpt2":
        byte_bpe_tokenizer(folder, bos=False)
        cfg = GPT2Config(vocab_size=400, n_embd=hidden, n_layer=layers, n_head=4, n_positions=64)
        model = GPT2Model(cfg)
    elif arch == "llama":
        byte_bpe_tokenizer(folder, bos=True)
        cfg = LlamaConfig(vocab_size=400, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=3 * hidden, max_position_embeddings=64)
        model = LlamaModel(cfg)
    elif arch in FAMILY_CONFIGS:
        import transformers

        kind, config_name, model_name, extra = FAMILY_CONFIGS[arch]
        if kind == "wordpiece":
            tok = AutoTokenizer.from_pretrained(bundled_minilm())
            tok.save_pretrained(folder)
            vocab = tok.vocab_size
            extra = {**extra, **({"pad_token_id": tok.pad_token_id} if arch != "electra" else {})}
        else:
            byte_bpe_tokenizer(folder, bos=kind == "bpe-bos")
            vocab = 400
        sizes = {"vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
                 "intermediate_size": 3 * hidden, "max_position_embeddings": 64}
        renames = extra.pop("_rename", {}) if "_rename" in extra else {}
        sizes = {renames.get(k, k): v for k, v in sizes.items()}
        cfg = getattr(transformers, config_name)(**sizes, **{k: v for k, v in extra.items() if k != "_rename"})
        model = getattr(transformers, model_name)(cfg)
    else:
        raise ValueError(arch)
    model.save_pretrained(folder)
    return folder


FAMILY_CONFIGS: dict[str, tuple[str, str, str, dict]] = {
    # arch: (tokenizer: wordpiece = MiniLM's, bpe / bpe-bos = byte BPE without / with a BOS), config, model, extra
    "electra": ("wordpiece", "ElectraConfig", "ElectraModel", {"embedding_size": 16}),
    "deberta-v2": ("wordpiece", "DebertaV2Config", "DebertaV2Model",
                   {"relative_attention": True, "position_buckets": 16, "pos_att_type": ["p2c", "c2p"]}),
    "modernbert": ("wordpiece", "ModernBertConfig", "ModernBertModel",
                   {"global_attn_every_n_layers": 1, "local_attention": 16, "cls_token_id": 101, "sep_token_id": 102,
                    "bos_token_id": 101, "eos_token_id": 102}),
    "gpt-neox": ("bpe", "GPTNeoXConfig", "GPTNeoXModel", {}),
    "opt": ("bpe-bos", "OPTConfig", "OPTModel",
            {"_rename": {"intermediate_size": "ffn_dim"}, "word_embed_proj_dim": None, "pad_token_id": 0}),
    "mistral": ("bpe-bos", "MistralConfig", "MistralModel", {"num_key_value_heads": 2}),
    "qwen2": ("bpe", "Qwen2Config", "Qwen2Model", {"num_key_value_heads": 2}),
    "qwen3": ("bpe", "Qwen3Config", "Qwen3Model", {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma2": ("bpe-bos", "Gemma2Config", "Gemma2Model", {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma3": ("bpe-bos", "Gemma3TextConfig", "Gemma3TextModel", {"num_key_value_heads": 2, "head_dim": 8}),
    "phi3": ("bpe-bos", "Phi3Config", "Phi3Model", {"num_key_value_heads": 2, "pad_token_id": 0}),
}
"""Tiny random models of the families `tiny_model` builds from config beyond bert/roberta/distilbert/gpt2/llama."""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSON Lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_corpus(folder: Path, n: int = 300, seed: int = 0, shard_size: int = 120, after: Path | None = None,
                extra: dict | None = None) -> Path:
    """Prepare a small corpus of n pseudo-sentences (words of SENTENCES) with domain/sentiment labels.

    `after`: a corpus this one continues (ids after its own); `extra`: more metadata on every row.
    """
    import random

    from miner.config import PrepareOptions, RunOptions
    from miner.corpus.prepare import prepare_corpus

    rng = random.Random(seed)
    words = " ".join(SENTENCES).replace(".", "").replace(",", "").split()
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 18))).capitalize() + "."
        rows.append({"text": text, "domain": ["news", "social", "wiki"][i % 3],
                     "sentiment": ["positive", "negative"][rng.random() < 0.5], **(extra or {})})
    folder.mkdir(parents=True, exist_ok=True)
    src = write_jsonl(folder / "docs.jsonl", rows)
    out = folder / "corpus"
    prepare_corpus([src], out, PrepareOptions(shard_size=shard_size), RunOptions(workers=1), after=after)
    return out


def write_job(path: Path, **fields: object) -> Path:
    """Write a job YAML file."""
    import yaml

    path.write_text(yaml.safe_dump({k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items()}))
    return path
