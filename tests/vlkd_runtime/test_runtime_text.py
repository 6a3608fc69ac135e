"""Text without torch: `ClipTokenizer` (Hugging Face `tokenizers`) tokenises exactly as open_clip's SimpleTokenizer,
and a model dir's ONNX text encoder gives the teacher's text features of its labels (its card's prompts) within
1e-5."""
import random

import numpy as np
import open_clip
import pytest
from safetensors.numpy import load_file

from vlkd_ros.inference.model_paths import shipped_model_dir
from vlkd_runtime.grasp_dir import read_served_model_dir
from vlkd_runtime.text import OnnxTextEncoder, PromptConfig, prompt_texts

TRICKY = ["", "   ", "a photo of a dog.", "Tom &amp;amp; Jerry's  mug\t(2nd)", "naïve café", "ÆØÅ 物体 ☃ 🙂",
          "<start_of_text>x<end_of_text>", "<START_OF_TEXT>", "don't you've we'll", "12.5cm 3,000", "a" * 300,
          "x " * 100, "\u00e9 vs e\u0301", "Ｆｕｌｌｗｉｄｔｈ", "mojibake: Ã©"]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Strings of letters, digits, punctuation, whitespace and other scripts, seeded."""
    rng = random.Random(seed)
    pool = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,;:'!?-_()&<>/\\\t\n\"éüñßæøåπλжя中文字日本語한국어🙂☃"
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def test_the_tokenizer_is_open_clips():
    encoder = OnnxTextEncoder(shipped_model_dir() / "text_encoder")
    ref = open_clip.get_tokenizer("ViT-B-32")  # the same SimpleTokenizer, context 77
    ours = encoder.tokenizer
    texts = TRICKY + random_texts(400)
    ours.context_length = 77
    assert np.array_equal(ours(texts), ref(texts).numpy())
    card = read_served_model_dir(shipped_model_dir()).grasp
    names = card.objects["id"] + card.objects["ood"]
    prompts = [t for texts in prompt_texts(names, card.prompts())[0] for t in texts]
    ours.context_length = 32  # the shipped teacher's
    assert np.array_equal(ours(prompts), open_clip.tokenize(prompts, context_length=32).numpy())


@pytest.mark.parametrize("fixture", ["tiny_grasp_model", "tiny_rgbd_grasp_model"])
def test_a_model_dirs_text_encoder_gives_the_teachers_features(fixture, request):
    model = read_served_model_dir(request.getfixturevalue(fixture))
    encoder = OnnxTextEncoder(model.text_encoder_dir())
    teacher = load_file(str(model.root / "text_features.safetensors"))
    for part in ("id", "ood"):  # the card's label texts are the prompts the teacher encoded
        assert np.abs(encoder.encode(model.card.texts[part]) - teacher[part]).max() < 1e-5


def test_prompts_follow_the_card():
    config = PromptConfig.from_card({"templates": ["a {}.", "the {}!"], "negative_templates": ["no {}."],
                                     "use_descriptions": True, "descriptions": "ignored.json"})
    pos, neg = prompt_texts(["tea_cup", "mug"], config, {"tea_cup": "white, with a handle"})
    assert pos == [["a tea cup. white, with a handle", "the tea cup! white, with a handle"], ["a mug.", "the mug!"]]
    assert neg == [["no tea cup. white, with a handle"], ["no mug."]]
    assert prompt_texts(["mug"], PromptConfig())[1] is None
