"""Redaction of secrets in the forms a hostile branch prints them in, split across lines too;
short declared secrets refused at load; logs and artifacts private to the pipeline's user."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import dagster as dg
import pytest

from sevenp_pipeline.config import ConfigError, Settings, load_app_config
from sevenp_pipeline.files import private_dir, shared_dir
from sevenp_pipeline.redaction import MASK, MIN_SECRET_LENGTH, SECRET_NAME, Redactor
from sevenp_pipeline.resources.artifacts import LocalArtifactStore
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner

# '/', '+', '=', '?' and ' ' make the percent-encodings differ from each other and from the secret;
# its bytes give '+' and '/' in standard base64, so the URL-safe alphabet differs too.
SECRET = "s3cr3t/T0k+en=v?l ue>>~~42"
RAW = SECRET.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


FORMS = {
    "plain": SECRET,
    "base64": _b64(RAW),
    "base64 unpadded": _b64(RAW).rstrip("="),
    "base64url": _b64url(RAW),
    "base64url unpadded": _b64url(RAW).rstrip("="),
    # npm's _auth and HTTP Basic: the user shifts the secret to each offset within a 3-byte group.
    "basic auth": _b64(b"ci:" + RAW),
    "basic auth, 1-byte user": _b64(b"u:" + RAW),
    "basic auth, 4-byte user": _b64(b"user:" + RAW),
    "basic auth url-safe unpadded": _b64url(b"deploy-bot:" + RAW).rstrip("="),
    "hex": RAW.hex(),
    "HEX": RAW.hex().upper(),
    "quote": quote(SECRET),
    "quote safe=''": quote(SECRET, safe=""),
    "quote_plus": quote_plus(SECRET),
    "lower-case escapes": re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(SECRET, safe="")),
}

# How many leading characters of a `user:secret` form encode the user alone: on a line of their
# own they are the user name, not the secret, and stay.
USER_CHARS = {"basic auth": 8 * 3 // 6, "basic auth, 1-byte user": 8 * 2 // 6, "basic auth, 4-byte user": 8 * 5 // 6,
              "basic auth url-safe unpadded": 8 * 11 // 6}


def test_the_forms_really_differ() -> None:
    """Otherwise the tests below would check one form under many names."""
    assert len(set(FORMS.values())) == len(FORMS)
    assert "+" in _b64(RAW) or "/" in _b64(RAW)


@pytest.mark.parametrize("name", FORMS)
def test_every_encoded_form_is_masked_whole(name: str) -> None:
    redact = Redactor([SECRET])
    assert redact(f"leak: {FORMS[name]} end") == f"leak: {MASK} end"


@pytest.mark.parametrize("mixed", [
    SECRET.replace("/", "%2F").replace(" ", "%20"),  # neither quote() nor quote_plus() writes these
    SECRET.replace("+", "%2B").replace(" ", "+").replace("~", "%7e"),
])
def test_percent_encoding_of_only_some_characters(mixed: str) -> None:
    assert Redactor([SECRET])(f"url?x={mixed}&y=1 tail") == f"{MASK} tail"


@pytest.mark.parametrize("before", range(6))
def test_base64_blob_with_the_secret_at_any_offset(before: int) -> None:
    blob = _b64(b"{header}"[:before] + RAW + b" and more bytes after it")
    assert Redactor([SECRET])(f"data={blob};") == f"data={MASK};"


def test_text_without_secrets_is_left_alone() -> None:
    redact = Redactor([SECRET])
    text = "PASS src/app.test.ts (12 ms)\n" + _b64(b"an ordinary blob of bytes") + "\n" + "0123abcdef" * 4
    assert redact(text) == text


def test_minimum_length() -> None:
    short, long_enough = "7chars!", "8chars!!"
    assert MIN_SECRET_LENGTH == 8
    redact = Redactor([short, long_enough])
    assert redact(f"{short} {long_enough}") == f"{short} {MASK}"


@pytest.mark.parametrize("name", FORMS)
def test_form_split_across_two_lines_of_a_text(name: str) -> None:
    form = FORMS[name]
    redact = Redactor([SECRET])
    for cut in (1, 4, len(form) // 2, len(form) - 4, len(form) - 1):
        for newline in ("\n", "\r\n"):
            out = redact(f"leak: {form[:cut]}{newline}{form[cut:]} end\nnext line")
            first, second, last = out.split("\n")
            assert form not in first + second
            user = USER_CHARS.get(name, 0)
            # Left over at most: base64's last 1-2 characters and padding, which the secret only partly sets.
            head, tail = form[user:cut], form[max(cut, user):]
            assert len(head) < 4 or head not in first, (cut, out)
            assert len(tail) < 4 or tail not in second, (cut, out)
            assert first.startswith("leak: ") and second.endswith(" end") and last == "next line"


def test_secret_over_three_lines_and_blank_lines() -> None:
    redact = Redactor([SECRET])
    assert redact(f"{SECRET[:5]}\n{SECRET[5:12]}\n{SECRET[12:]}") == f"{MASK}\n{MASK}\n{MASK}"
    assert redact(f"x {SECRET[:9]}\n\n{SECRET[9:]} y") == f"x {MASK}\n\n{MASK} y"


def test_multi_line_secret_printed_whole() -> None:
    body = base64.b64encode(bytes(range(256)) * 2).decode()
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(textwrap.wrap(body, 64)) + "\n-----END PRIVATE KEY-----\n"
    out = Redactor([pem])(f"key:\n{pem}done")
    assert out.split("\n") == ["key:", *[MASK] * (pem.count("\n")), "done"]


def test_stream_holds_a_line_only_while_it_could_continue_a_secret() -> None:
    stream = Redactor([SECRET]).stream()
    assert stream.feed("plain line.") == ["plain line."]  # nothing begins with '.': out at once
    assert stream.feed(f"token: {SECRET[:6]}") == []  # could be the first half
    assert stream.feed(f"{SECRET[6:]} rest.") == [f"token: {MASK}", f"{MASK} rest."]
    assert stream.feed("last.") == ["last."]
    # Three characters are too few to hold a line back for (one or two end most lines): it goes out,
    # and what continues the secret on the next line is masked.
    assert stream.feed(f"ends with {SECRET[:3]}") == [f"ends with {SECRET[:3]}"]
    assert stream.feed(f"{SECRET[3:]} more.") == [f"{MASK} more."]
    assert stream.feed(f"ends with {SECRET[:4]}") == []
    assert stream.flush() == [f"ends with {SECRET[:4]}"]  # the output ended: nothing to join


# -- the process runner ---------------------------------------------------------------------

SPLIT_SCRIPT = """
import json, sys, time
for form in json.loads(sys.argv[1]):
    cut = len(form) // 2
    print("whole", form, "end", flush=True)
    print("split", form[:cut], flush=True)
    time.sleep(0.01)  # two reads, not one
    print(form[cut:], "end", flush=True)
print("done", flush=True)
"""


def test_run_masks_every_form_whole_and_split_in_tail_output_log_and_live_log(tmp_path: Path) -> None:
    forms = list(FORMS.values())
    live: list[str] = []
    log = tmp_path / "logs" / "leak.log"
    outcome = ProcessRunner(log_flush_seconds=0.05, tail_lines=500).run(
        ExecuteRequest(argv=["python3", "-c", SPLIT_SCRIPT, json.dumps(forms)], cwd=tmp_path, label="leak",
                       env={"LEAKY_VALUE": SECRET}, secret_env=["LEAKY_VALUE"], log_path=log, capture=True),
        log=live.append,
    )
    assert outcome.ok
    places = {"tail": list(outcome.tail), "output": list(outcome.output),
              "log file": log.read_text().splitlines(), "live log": "\n".join(live).splitlines()}
    assert len(outcome.output) == 3 * len(forms) + 1  # every line kept, in order
    assert outcome.output[-1] == "done"
    for place, lines in places.items():
        text = "\n".join(lines)
        for form in forms:
            cut = len(form) // 2
            assert text.count(form) == 0, (place, form)
            assert form[:cut] not in text and form[cut:] not in text, (place, form)
        assert text.count(f"whole {MASK} end") == len(forms), place


def test_run_still_streams_lines_live(tmp_path: Path) -> None:
    """A held line waits for the next one, not for the end of the command."""
    script = "import time\nfor i in range(4):\n  print('line', i, flush=True); time.sleep(0.4)"
    seen: list[str] = []
    ProcessRunner(log_flush_seconds=0.05).run(
        ExecuteRequest(argv=["python3", "-c", script], cwd=tmp_path, label="py", secrets=["line 123456789"]),
        log=seen.append,
    )
    assert len([m for m in seen if "line " in m]) >= 3  # several batches while it ran


# -- declared secrets and name heuristics ----------------------------------------------------

def _app_with_secrets(tmp_path: Path) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(textwrap.dedent("""\
        name: x
        repository: {url: /srv/x.git}
        secrets: [LONG_ENOUGH_SECRET, NPM_TOKEN]
        stages: {}
        """))
    return path


def test_short_declared_secret_is_refused_naming_file_and_key(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONG_ENOUGH_SECRET", "abcdefgh")
    monkeypatch.setenv("NPM_TOKEN", "s3cr7")
    path = _app_with_secrets(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_app_config(path)
    message = str(raised.value)
    assert message == (f"{path}: secrets[1]: NPM_TOKEN is 5 characters long; a secret shorter than 8 "
                       "characters cannot be masked reliably in logs")
    assert "s3cr7" not in message


def test_declared_secret_of_eight_characters_or_unset_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONG_ENOUGH_SECRET", "abcdefgh")
    monkeypatch.delenv("NPM_TOKEN", raising=False)
    assert load_app_config(_app_with_secrets(tmp_path)).secrets == ["LONG_ENOUGH_SECRET", "NPM_TOKEN"]


SECRET_NAMES = ["GITHUB_PAT", "GH_PAT", "PAT", "PAT_FOR_RELEASES", "NPM_CONFIG__AUTH", "npm_config__auth", "AUTH",
                "BASIC_AUTH", "OAUTH_CLIENT", "AWS_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIAL",
                "SLACK_WEBHOOK_URL", "SENTRY_DSN", "DSN", "DB_PASSWORD", "NPM_TOKEN", "STRIPE_API_KEY",
                "SEVENP_SIGNING_KEY", "SSH_KEY_FILE"]
NOT_SECRET_NAMES = ["PATH", "PATTERN", "NODE_PATH", "PYTHONPATH", "XPATH_EXPR", "AUTHOR", "GIT_AUTHOR_NAME",
                    "AUTHORS_FILE", "PWD", "OLDPWD", "NODE_ENV", "HOME", "DSNAME", "TIMESTAMP", "KEYBOARD_LAYOUT",
                    "TURNKEY"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_looking_names(name: str) -> None:
    redact = Redactor()
    redact.add_from_env({name: "value-of-the-variable"})
    assert SECRET_NAME.search(name)
    assert redact("got value-of-the-variable") == f"got {MASK}"


@pytest.mark.parametrize("name", NOT_SECRET_NAMES)
def test_names_that_are_not_secrets(name: str) -> None:
    redact = Redactor()
    redact.add_from_env({name: "value-of-the-variable"})
    assert not SECRET_NAME.search(name)
    assert redact("got value-of-the-variable") == "got value-of-the-variable"


def test_credentials_in_url_values_are_secrets() -> None:
    redact = Redactor()
    redact.add_from_env({
        "NPM_REGISTRY": "https://ci-bot:tok3n%2Fvalue99@registry.example/npm/",
        "REPO_URL": "https://ghp_abcdefgh12345@github.com/org/repo.git",
        "MIRROR": "https://registry.npmjs.org/",
    })
    assert redact("token tok3n/value99 and tok3n%2Fvalue99") == f"token {MASK} and {MASK}"
    assert redact("ghp_abcdefgh12345 leaked") == f"{MASK} leaked"
    assert redact("ci-bot:tok3n%2Fvalue99") == MASK
    assert redact("fetching https://registry.npmjs.org/") == "fetching https://registry.npmjs.org/"


# -- private files ---------------------------------------------------------------------------

@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    """A permissive umask: the modes below must not depend on the process's umask."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_log_file_is_0600_in_folders_0700(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "stage" / "out.log"
    with _umask(0o022):
        ProcessRunner().run(ExecuteRequest(argv=["echo", "hi"], cwd=tmp_path, label="echo", log_path=log))
    assert log.read_text() == "hi\n"
    assert _mode(log) == 0o600
    assert _mode(log.parent) == 0o700 and _mode(log.parent.parent) == 0o700


def test_artifact_is_0600_in_folders_0700(tmp_path: Path) -> None:
    source = tmp_path / "report.json"
    source.write_text("{}")
    source.chmod(0o644)
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    with _umask(0o022):
        uri = store.put_file(app="web", sha="abc123", name="reports/report.json", path=source)
    stored = store.local_path(app="web", sha="abc123", name="reports/report.json")
    assert stored is not None and stored.read_text() == "{}"
    assert uri == "http://127.0.0.1:3001/web/abc123/reports/report.json"  # the artifact server's link
    assert _mode(stored) == 0o600
    assert {_mode(p) for p in (stored.parent, stored.parent.parent, tmp_path / "artifacts")} == {0o700}


def test_home_is_0711_and_private_dir_0700(tmp_path: Path) -> None:
    with _umask(0o022):
        home = Settings(home=tmp_path / "a" / "home", apps_dir=tmp_path).ensure_home()
        deep = private_dir(tmp_path / "b" / "c" / "d")
    assert _mode(home) == _mode(home.parent) == 0o711  # passable to <home>/services, never listable
    assert {_mode(tmp_path / "b"), _mode(tmp_path / "b" / "c"), _mode(deep)} == {0o700}


def test_shared_dir_sets_its_mode_under_the_orchestrators_umask(tmp_path: Path) -> None:
    """A folder another user must enter: 0755 under umask 077, even when an earlier run made it 0700."""
    made_before = tmp_path / "made-before"
    with _umask(0o077):
        os.mkdir(made_before, 0o755)  # what the stage_visible_dir fixture did: masked to 0700
        assert _mode(made_before) == 0o700
        shared = shared_dir(made_before)
        deep = shared_dir(tmp_path / "x" / "y")
    assert shared == made_before and _mode(made_before) == 0o755
    assert _mode(tmp_path / "x") == _mode(deep) == 0o755


def test_code_location_sets_the_private_umask_for_dagsters_own_files(tmp_path: Path) -> None:
    import sevenp_pipeline.definitions  # noqa: F401, PLC0415 (what a code server or run worker imports)

    current = os.umask(0o077)
    os.umask(current)
    assert current == 0o077

    @dg.asset
    def chatty() -> None:
        print("a line in the compute log")

    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        assert dg.materialize([chatty], instance=instance).success
    compute_logs = list((tmp_path / "dagster" / "storage").rglob("*.out"))
    assert compute_logs and all(_mode(p) == 0o600 for p in compute_logs)
    assert all(_mode(p) == 0o700 for p in (tmp_path / "dagster" / "storage").rglob("*") if p.is_dir())
