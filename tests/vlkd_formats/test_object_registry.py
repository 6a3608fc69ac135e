"""vlkd_formats.object_registry: the one name normaliser refuses invisible and layout characters and path separators
with a one-line reason, keeps other text as it is, and the registry stores exactly what it accepted."""
import pytest

from vlkd_formats.object_registry import (MAX_NAME_CHARS, ObjectEntry, ObjectRegistry, normalize_description,
                                          normalize_name, read_registry, write_registry)

REFUSED = [
    ("ob\x00ject", "holds a control character, U+0000 at position 2"),  # what the Python API sees (DDS cuts at NUL)
    ("物体 ☃ \u202e", "holds a format character (bidi override, zero-width, ...), U+202E at position 5"),
    ("zero\u200bwidth", "U+200B at position 4"), ("join\u200dme", "U+200D"), ("\ufeffbom", "U+FEFF at position 0"),
    ("soft\u00adhyphen", "U+00AD"), ("tag\U000e0041", "U+E0041"),
    ("red\tcircle", "control character, U+0009"), ("two\nlines", "control character, U+000A"),
    ("bell\x07", "U+0007"), ("line\u2028sep", "a line separator, U+2028"), ("para\u2029sep", "a paragraph separator"),
    ("private\ue000use", "a private-use character, U+E000"), ("unassigned\U000e0080", "an unassigned code point"),
    ("../../etc/passwd", "holds the path separator '/': names are not paths"),
    ("a\\b", "holds the path separator '\\\\'"), ("/", "path separator"),
    ("", "is empty"), ("   ", "is empty"), ("?!", "has no letters or digits"), ("☃", "has no letters or digits"),
    ("x" * (MAX_NAME_CHARS + 1), f"at most {MAX_NAME_CHARS} are allowed"),
    ("x" * 1_000_000, f"is 1000000 characters long; at most {MAX_NAME_CHARS}"),
]


@pytest.mark.parametrize("name,reason", REFUSED)
def test_names_that_are_refused_say_why_on_one_line(name, reason):
    with pytest.raises(ValueError, match=None) as err:
        normalize_name(name)
    message = str(err.value)
    assert reason in message, message
    assert "\n" not in message and "\x00" not in message and "\u202e" not in message and len(message) < 300


ACCEPTED = [("Red_Circle", "red circle"), ("  tea   CUP \n", "tea cup"), ("drop table objects;", "drop table objects;"),
            ("物体 ☃", "物体 ☃"), ("ob", "ob"), ("café", "café"), ("cafe\u0301", "café"),  # NFC: one spelling
            ("O'Brien's mug (blue)", "o'brien's mug (blue)"), ("..mug..", "..mug.."), ("x" * MAX_NAME_CHARS, "x" * 100)]


@pytest.mark.parametrize("name,stored", ACCEPTED)
def test_other_text_is_kept_and_normalising_twice_changes_nothing(name, stored):
    """Punctuation such as ';' or quotes is plain text: names never reach a path (file names use a slug) nor a
    query language."""
    assert normalize_name(name) == stored
    assert normalize_name(stored) == stored


def test_the_registry_stores_exactly_what_was_accepted(tmp_path):
    registry = ObjectRegistry().with_object(ObjectEntry("Drop_Table  objects;", "a  box;\tred", "added"))
    registry = registry.with_object(ObjectEntry("物体 ☃", "", "added"))
    write_registry(tmp_path, registry)
    back = read_registry(tmp_path)
    assert back == registry and back.names() == ["drop table objects;", "物体 ☃"]
    assert back.get("DROP_TABLE objects;").description == "a  box;\tred"  # descriptions: normalize_description
    with pytest.raises(ValueError, match="path separator"):
        registry.with_object(ObjectEntry("../../etc/passwd"))
    with pytest.raises(ValueError, match=r"U\+202E"):
        registry.get("x\u202e")


def test_descriptions_are_one_line_of_visible_text():
    assert normalize_description("  a small\tred\r\nbox  ") == "a small red box"
    assert normalize_description("") == ""
    for text, reason in [("a\x00b", "control character, U+0000"), ("x\u202ey", "U+202E"), ("y" * 501, "at most 500"),
                         (3, "must be a string")]:
        with pytest.raises(ValueError, match=None) as err:
            normalize_description(text)
        assert reason in str(err.value)
