from __future__ import annotations

from sevenp_pipeline.asset_helpers import md_table
from sevenp_pipeline.text import md_text, printable


def test_printable_strips_controls_and_bidi_but_keeps_words() -> None:
    assert printable("a\x1b[2Jb\x07c\x00d\x7fe\x9bf\u202eg\u2066h") == "a[2Jbcdefgh"
    assert printable("one\ntwo\tthree") == "one two three"
    assert printable("one\ntwo\tthree", multiline=True) == "one\ntwo\tthree"
    assert printable("Zoë — 7P ✓") == "Zoë — 7P ✓"


def test_markdown_gets_no_html_of_a_branch() -> None:
    assert md_text("<img src=x onerror=alert(1)> & co") == "&lt;img src=x onerror=alert(1)&gt; &amp; co"
    table = md_table(["test", "message"], [["<b>name</b>", "a|b\x1b[31m\nnext"]])
    assert table.splitlines()[-1] == "| &lt;b&gt;name&lt;/b&gt; | a\\|b[31m next |"
