"""Constitution files: a bad one is refused with an error naming the file, the line and the field."""

import pytest
from typer.testing import CliRunner

from rlhf.cli import app
from rlhf.constitutional.constitution import DEFAULT_CONSTITUTION, load_constitution
from rlhf.data import DataError

GOOD = "- {name: kind, critique: c, revision: r, comparison: kinder}\n"


@pytest.mark.parametrize("text, message", [
    ("- name: kind\n  critique: c\n  revision: r\n", r"c\.yaml:1: principles\[0\] \('kind'\): field 'comparison' is missing"),
    (GOOD + "- name: calm\n  critique: c\n  revision: r\n  comparison: 3\n",
     r"c\.yaml:2: principles\[1\] \('calm'\): field 'comparison' must be a non-empty string, got 3"),
    (GOOD + "- {name: calm, critic: c, revision: r, comparison: x}\n", r"c\.yaml:2: principles\[1\] \('calm'\): unknown field 'critic'"),
    (GOOD + GOOD, r"c\.yaml:2: principles\[1\]: name 'kind' is used twice"),
    ("- {name: kind, critique: '', revision: r, comparison: x}\n", r"field 'critique' must be a non-empty string"),
    ("- just a string\n", r"c\.yaml:1: principles\[0\]: expected a mapping"),
    ("examples: []\n", r"c\.yaml: field 'principles' is missing"),
    ("principles: []\n", r"c\.yaml: expected a non-empty list of principles"),
    ("principle:\n" + GOOD, r"c\.yaml: unknown top-level field 'principle'"),
    ("principles:\n  " + GOOD + "examples:\n  - {request: q, response: a, critique: c}\n",
     r"c\.yaml:4: examples\[0\]: field 'revision' is missing"),
    ("- {name: kind\n", r"(?s)c\.yaml: cannot read constitution: .*c\.yaml\", line 2"),
])
def test_bad_constitution_files_name_the_file_line_and_field(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(DataError, match=message):
        load_constitution(str(f))


def test_good_files_and_the_default(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("principles:\n  " + GOOD + "examples:\n  - {request: q, response: a, critique: c, revision: r}\n")
    c = load_constitution(str(f))
    assert [p.name for p in c.principles] == ["kind"] and c.principles[0].comparison == "kinder"
    assert c.examples[0].revision == "r"
    f.write_text(GOOD)
    assert load_constitution(str(f)).examples == ()
    assert load_constitution(None) is DEFAULT_CONSTITUTION and len(DEFAULT_CONSTITUTION.examples) == 2
    with pytest.raises(DataError, match="missing.yaml: cannot read constitution"):
        load_constitution(str(tmp_path / "missing.yaml"))


def test_cli_reports_a_bad_constitution_without_a_traceback(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("- name: kind\n  critique: c\n  revision: r\n")
    res = CliRunner().invoke(app, ["constitutional", "revise", "--constitution", str(f), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "field 'comparison' is missing" in res.output and "c.yaml:1" in res.output
    assert not (tmp_path / "o").exists()  # nothing written
