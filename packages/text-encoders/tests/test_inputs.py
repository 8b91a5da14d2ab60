"""Bad input gets a clear error; blank texts get a defined meaning."""

from __future__ import annotations

import pytest

from clapkit.text import check_texts


def test_non_string_item_names_index_and_repr() -> None:
    with pytest.raises(TypeError, match=r"texts\[2\] is a int, not a str: 42"):
        check_texts(["a dog", "rain", 42])


def test_none_item_named() -> None:
    with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType, not a str: None"):
        check_texts([None, "rain"])  # type: ignore[list-item]


def test_long_bad_item_repr_is_shortened() -> None:
    with pytest.raises(TypeError) as info:
        check_texts([b"x" * 500])  # type: ignore[list-item]
    assert "texts[0] is a bytes" in str(info.value)
    assert len(str(info.value)) < 200


def test_single_string_is_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"single str 'a dog barks'; wrap it in a list"):
        check_texts("a dog barks")


def test_not_iterable_is_refused() -> None:
    with pytest.raises(TypeError, match="must be a list of strings, got int"):
        check_texts(3)  # type: ignore[arg-type]


def test_empty_list_raises() -> None:
    with pytest.raises(ValueError, match="texts is empty"):
        check_texts([])


def test_blank_texts_become_empty_and_others_are_kept_verbatim() -> None:
    texts = ["", "   ", "\t\n", " a dog ", "Ünïcödé 🐶 日本語"]
    assert check_texts(texts) == ["", "", "", " a dog ", "Ünïcödé 🐶 日本語"]


def test_tuple_and_generator_accepted() -> None:
    assert check_texts(("a", "b")) == ["a", "b"]
    assert check_texts(text for text in ["a", "b"]) == ["a", "b"]
