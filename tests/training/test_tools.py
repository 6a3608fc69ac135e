"""`vlkd split` (its algorithm: tests/vlkd_formats/test_split.py), `vlkd describe` (local model only), and
multi-process training through torchrun."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shapes_data import tiny_overrides
from training.describe import DescribeError, generate_descriptions
from vlkd_ros.cli import main as cli


def test_split_cli_materializes_the_three_splits(tiny_dataset, tmp_path):
    source = tiny_dataset / "train"  # 4 labels x 10 images
    assert cli(["split", "--source", str(source), "--out", str(tmp_path / "s"), "--seed", "3"]) == 0
    split = json.loads((tmp_path / "s" / "split.json").read_text())
    assert len(split["id"]) == len(split["ood"]) == 2
    for label in split["id"]:
        assert len(list((tmp_path / "s" / "train" / label).iterdir())) == 8
        assert len(list((tmp_path / "s" / "val_on_train" / label).iterdir())) == 2
    for label in split["ood"]:
        assert len(list((tmp_path / "s" / "val" / label).iterdir())) == 10
    assert cli(["split", "--source", str(source), "--out", str(tmp_path / "s")]) == 2  # refuses a non-empty out


def test_describe_needs_a_local_model(tmp_path):
    with pytest.raises(DescribeError, match="not a local transformers model folder"):
        generate_descriptions(["mug"], tmp_path)


def test_describe_with_a_tiny_local_model(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train_from_iterator(["describe what a mug looks like in one sentence : round handle ceramic cup ."],
                            tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]",
                                                pad_token="[EOS]")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=16, n_layer=1, n_head=2))
    model.save_pretrained(tmp_path / "lm")
    fast.save_pretrained(tmp_path / "lm")
    out = generate_descriptions(["coffee_mug", "cup"], tmp_path / "lm", max_new_tokens=5)
    assert set(out) == {"coffee_mug", "cup"} and all(isinstance(v, str) and v for v in out.values())


def test_torchrun_two_processes(tiny_dataset, tiny_teacher_file, tmp_path):
    args = tiny_overrides(tiny_dataset, tiny_teacher_file, tmp_path / "run", tmp_path / "cache")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vlkd_ros.cli", "distill",
           *args, "optim.batch_size=8"]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # 40 training images, 2 ranks x batch 8: 2 full steps per epoch on each rank (drop_last)
    assert [r["step"] for r in records] == [2, 4]
    assert (tmp_path / "run" / "model" / "model.json").is_file()
