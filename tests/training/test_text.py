"""Label texts from templates, label2text.txt, chatgpt.txt and YAML/JSON descriptions."""
import pytest

from training.text import LabelTextConfig, LabelTextError, load_descriptions, load_label2text, resolve_label_texts

LABELS = ["red_circle", "blue_bar"]


def test_template_name_and_description(tmp_path):
    desc = tmp_path / "d.yaml"
    desc.write_text("red_circle: a round red disc.\nblue_bar: [a long blue stick., unused]\n")
    cfg = LabelTextConfig(templates=["a photo of a {}.", "a {}"], descriptions=str(desc), use_descriptions=True)
    texts = resolve_label_texts(LABELS, cfg)
    assert texts == [["a photo of a red circle. a round red disc.", "a red circle a round red disc."],
                     ["a photo of a blue bar. a long blue stick.", "a blue bar a long blue stick."]]
    assert resolve_label_texts(LABELS, LabelTextConfig())[0] == ["a photo of a red circle."]


def test_anchor_repo_formats(tmp_path):
    l2t = tmp_path / "label2text.txt"
    l2t.write_text("red_circle 1 crimson_disc\nblue_bar 2 navy_rod\n")
    chat = tmp_path / "chatgpt.txt"
    chat.write_text("A disc.\n\nA rod.\n")
    assert load_label2text(l2t, LABELS) == {"red_circle": "crimson disc", "blue_bar": "navy rod"}
    assert load_descriptions(chat, LABELS) == {"red_circle": "A disc.", "blue_bar": "A rod."}
    cfg = LabelTextConfig(label2text=str(l2t), descriptions=str(chat), use_descriptions=True)
    assert resolve_label_texts(LABELS, cfg)[1] == ["a photo of a navy rod. A rod."]


def test_bad_description_files(tmp_path):
    chat = tmp_path / "chatgpt.txt"
    chat.write_text("only one line\n")
    with pytest.raises(LabelTextError, match="1 descriptions but the dataset has 2 labels"):
        load_descriptions(chat, LABELS)
    yml = tmp_path / "d.yaml"
    yml.write_text("green_star: nope\n")
    with pytest.raises(LabelTextError, match="green_star"):
        load_descriptions(yml, LABELS)
    with pytest.raises(LabelTextError, match="no description"):
        resolve_label_texts(LABELS, LabelTextConfig(use_descriptions=True), {"red_circle": "x"})
    with pytest.raises(LabelTextError, match="exactly one"):
        LabelTextConfig(templates=["no slot"]).validate()
