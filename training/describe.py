"""`vlkd describe`: rich label descriptions from a local transformers text-generation model (never a download)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from tqdm import tqdm

from training.text import readable_name
from vlkd_formats.atomic_io import atomic_write_text
from vlkd_formats.errors import VlkdError

DEFAULT_PROMPT = "Describe what a {} looks like in one sentence:"


class DescribeError(VlkdError, RuntimeError):
    """No usable local language model."""


def generate_descriptions(labels: list[str], model_path: str | os.PathLike, prompt: str = DEFAULT_PROMPT,
                          max_new_tokens: int = 40, seed: int = 0) -> dict[str, str]:
    """One generated sentence per label from the local model folder `model_path` (offline only)."""
    if prompt.count("{}") != 1:
        raise ValueError(f"prompt {prompt!r} must contain exactly one '{{}}' for the label name")
    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise DescribeError(f"{path} is not a local transformers model folder (no config.json); download one on a "
                            "machine with internet (e.g. `huggingface-cli download gpt2 --local-dir models/gpt2`) "
                            "and pass its folder")
    try:
        from transformers import pipeline, set_seed
    except ImportError as err:
        raise DescribeError("`vlkd describe` needs the transformers package: pip install transformers") from err
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_seed(seed)
    generator = pipeline("text-generation", model=str(path), tokenizer=str(path), device="cpu")
    out = {}
    for label in tqdm(labels, desc="describing labels", unit="label"):
        text = prompt.format(readable_name(label))
        result = generator(text, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False)
        sentence = " ".join(result[0]["generated_text"].split())
        out[label] = sentence.split(". ")[0].strip() or readable_name(label)
    return out


def write_descriptions(descriptions: dict[str, str], path: str | os.PathLike) -> Path:
    """Write a YAML map label -> description (the format `text.descriptions` reads)."""
    return atomic_write_text(path, yaml.safe_dump(descriptions, sort_keys=True, allow_unicode=True))
