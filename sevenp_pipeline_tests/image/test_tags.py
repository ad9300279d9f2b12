"""Image tags as docker/metadata-action makes them for the spec's "Extract Metadata" step."""

from __future__ import annotations

import hashlib
import re

import pytest

from sevenp_pipeline.image.tags import image_tags, sanitize_tag, semver_tags

VALID_TAG = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,127}$")
SHA = "0123456789abcdef0123456789abcdef01234567"


def test_branch_push_gives_branch_and_prefixed_sha() -> None:
    assert image_tags(branch="develop", sha=SHA) == ["develop", "develop-0123456"]


def test_branch_is_lowercased_and_slashes_become_dashes() -> None:
    assert image_tags(branch="Feature/Login_Form", sha=SHA) == ["feature-login_form", "feature-login_form-0123456"]


def test_pull_request_gives_pr_tag_instead_of_branch_tag() -> None:
    assert image_tags(branch="feature/x", sha=SHA, pr_number=42) == ["pr-42", "feature-x-0123456"]


def test_release_version_gives_full_and_major_minor() -> None:
    assert image_tags(branch="main", sha=SHA, version="1.4.2") == ["main", "1.4.2", "1.4", "main-0123456"]


def test_git_tag_event_uses_the_tag_not_the_package_version() -> None:
    assert image_tags(branch="main", sha=SHA, git_tag="v2.0.1", version="1.4.2") == ["2.0.1", "2.0", "main-0123456"]


def test_prerelease_gets_no_major_minor() -> None:
    assert semver_tags("v3.1.0-rc.1") == ["3.1.0-rc.1"]
    assert semver_tags("1.0.0+build.5") == ["1.0.0-build.5", "1.0"]


@pytest.mark.parametrize("version", ["release-1", "1.2", "01.2.3", "v1.2.3.4", "", "latest"])
def test_invalid_semver_gives_no_semver_tags(version: str) -> None:
    assert semver_tags(version) == []
    assert image_tags(branch="main", sha=SHA, version=version) == ["main", "main-0123456"]


@pytest.mark.parametrize("branch", ["$(touch pwned)", ";rm -rf /", "`id`", "a b|c&&d", "../../etc/passwd",
                                    "-leading", ".hidden", "x" * 300, "ünïcode/ブランチ", "$$$", "--", "a\nb"])
def test_hostile_branch_names_give_safe_valid_tags(branch: str) -> None:
    tags = image_tags(branch=branch, sha=SHA, pr_number=None)
    assert tags, branch
    for tag in tags:
        assert VALID_TAG.match(tag), (branch, tag)
        assert not any(c in tag for c in "$;`|& /\n()")
    assert tags[-1].endswith("-0123456")


def test_specific_hostile_examples() -> None:
    assert image_tags(branch="$(touch pwned)", sha=SHA) == ["touch-pwned-", "touch-pwned--0123456"]
    assert sanitize_tag(";rm -rf /") == "rm--rf-"


def test_long_branch_is_capped_at_128_including_sha_suffix() -> None:
    tags = image_tags(branch="b" * 500, sha=SHA)
    assert len(tags[0]) == 128
    assert len(tags[1]) == 128 and tags[1].endswith("-0123456")


def test_branch_that_sanitizes_to_nothing_gets_a_stable_hash_name() -> None:
    first = image_tags(branch="$$$", sha=SHA)
    assert first == image_tags(branch="$$$", sha=SHA)
    assert first[0].startswith("branch-") and first[0] != image_tags(branch="@@@", sha=SHA)[0]


def test_bad_sha_and_pr_number_are_refused() -> None:
    with pytest.raises(ValueError, match="commit sha"):
        image_tags(branch="main", sha="$(id)")
    with pytest.raises(ValueError, match="pull request"):
        image_tags(branch="main", sha=SHA, pr_number=0)


def test_no_duplicates() -> None:
    tags = image_tags(branch="release/1.2", sha=SHA, version="1.2.0", git_tag="v1.2.0")
    assert len(tags) == len(set(tags))
    assert tags == ["1.2.0", "1.2", "release-1.2-0123456"]
    own = "1.2-branch-" + hashlib.sha256(b"1.2").hexdigest()[:8]  # a branch named 1.2 does not get the semver tag
    assert image_tags(branch="1.2", sha=SHA, version="1.2.0") == [own, "1.2.0", "1.2", f"{own}-0123456"]


@pytest.mark.parametrize("branch", ["Main", "-main", "MAIN", "Develop", "Release/1.2",
                                    "latest", "1.4", "1.4.2", "pr-7", "sha-0123456", "inputs-" + "ab" * 20,
                                    "branch-0123456789ab", "main-0123456", "release-1.2-0123456"])
def test_a_branch_never_takes_a_protected_tag_it_does_not_own(branch: str) -> None:
    protected = {"main", "develop", "release-1.2", "latest", "1.4", "1.4.2", "pr-7", "sha-0123456",
                 "inputs-" + "ab" * 20, "branch-0123456789ab", "main-0123456", "release-1.2-0123456"}
    tags = image_tags(branch=branch, sha=SHA)
    assert not protected & set(tags), tags
    assert tags[0].endswith(f"-branch-{hashlib.sha256(branch.encode()).hexdigest()[:8]}")
    assert all(VALID_TAG.match(t) for t in tags)


def test_protected_tags_stay_with_their_own_branch() -> None:
    assert image_tags(branch="main", sha=SHA)[0] == "main"
    assert image_tags(branch="release/1.2", sha=SHA)[0] == image_tags(branch="release-1.2", sha=SHA)[0] == "release-1.2"
    assert image_tags(branch="feature/main", sha=SHA)[0] == "feature-main"  # not protected: as before
