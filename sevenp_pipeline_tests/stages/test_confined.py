"""Removing stale outputs in a checkout never follows a link the commit planted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sevenp_pipeline.stages.confined import LinkInTheWay, remove_beneath


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "reports" / "junit").mkdir(parents=True)
    (root / "reports" / "junit" / "unit.xml").write_text("<stale/>")
    (root / "artifacts" / "shots").mkdir(parents=True)
    (root / "artifacts" / "shots" / "a.png").write_text("png")
    return root


def test_files_and_folders_inside_are_removed(checkout: Path) -> None:
    remove_beneath(checkout, "reports/junit/unit.xml")
    remove_beneath(checkout, "artifacts")
    assert not (checkout / "reports" / "junit" / "unit.xml").exists() and not (checkout / "artifacts").exists()
    remove_beneath(checkout, "reports/junit/unit.xml")  # gone already: nothing to do
    remove_beneath(checkout, "missing/folder/file")


def test_a_linked_folder_on_the_way_is_not_followed(checkout: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "junit").mkdir(parents=True)
    victim = outside / "junit" / "unit.xml"
    victim.write_text("the host's file")
    (checkout / "linked").symlink_to(outside)
    with pytest.raises(LinkInTheWay, match="linked is a link"):
        remove_beneath(checkout, "linked/junit/unit.xml")
    with pytest.raises(LinkInTheWay):
        remove_beneath(checkout, "linked/junit")
    assert victim.read_text() == "the host's file"


def test_a_link_as_the_last_component_is_removed_itself(checkout: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (checkout / "artifacts-link").symlink_to(outside)
    (checkout / "report-link").symlink_to(outside / "keep")
    (checkout / "artifacts" / "shots" / "host").symlink_to(outside)  # a link inside a folder being removed
    remove_beneath(checkout, "artifacts-link")
    remove_beneath(checkout, "report-link")
    remove_beneath(checkout, "artifacts")
    assert not os.path.lexists(checkout / "artifacts-link") and not os.path.lexists(checkout / "report-link")
    assert not (checkout / "artifacts").exists()
    assert (outside / "keep").read_text() == "x"


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", ""])
def test_a_path_that_is_not_inside_is_refused(checkout: Path, rel: str) -> None:
    with pytest.raises(ValueError, match="is not a path inside"):
        remove_beneath(checkout, rel)
