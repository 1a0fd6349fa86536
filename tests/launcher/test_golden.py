"""The golden-record helper itself: a missing record never passes, and CI never writes one."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(30)


def test_a_missing_record_fails_in_ci_and_writes_nothing(assert_matches_golden, tmp_path):
    with pytest.raises(pytest.fail.Exception, match="is missing, and CI does not write one"):
        assert_matches_golden("new.txt", "text\n", environ={"CI": "true"}, golden=tmp_path)
    assert not (tmp_path / "new.txt").exists()


def test_a_missing_record_is_written_locally_and_still_fails_once(assert_matches_golden, tmp_path):
    with pytest.raises(pytest.fail.Exception, match="was missing and has been written"):
        assert_matches_golden("new.txt", "text\n", environ={}, golden=tmp_path)
    assert (tmp_path / "new.txt").read_text() == "text\n"
    assert_matches_golden("new.txt", "text\n", environ={}, golden=tmp_path)


def test_a_difference_names_the_changed_line_and_the_file_to_delete(
    assert_matches_golden, tmp_path
):
    (tmp_path / "old.txt").write_text("a\nb\n")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)-b\n\+c.*delete .*old.txt"):
        assert_matches_golden("old.txt", "a\nc\n", environ={}, golden=tmp_path)
