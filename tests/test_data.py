import json
import os

import pandas as pd
import pytest

from rlhf.data import DataError, JsonlAppender, atomic_write, read_generations, read_pairs, read_prompts, write_jsonl


def write(p, text):
    p.write_text(text, encoding="utf-8")
    return p


def test_bad_json_line_names_file_and_line(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"prompt": "a"}\n{"prompt": "b"\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: invalid JSON"):
        read_prompts(f)


def test_missing_field_names_line(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"prompt": "a"}\n\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:3: missing field 'prompt'"):
        read_prompts(f)


def test_empty_file(tmp_path):
    f = write(tmp_path / "p.jsonl", "\n\n")
    with pytest.raises(DataError, match="empty"):
        read_prompts(f)


def test_non_object_and_wrong_type(tmp_path):
    with pytest.raises(DataError, match=r":1: expected a JSON object"):
        read_prompts(write(tmp_path / "a.jsonl", "[1, 2]\n"))
    with pytest.raises(DataError, match=r":1: field 'prompt' must be a string, got int"):
        read_prompts(write(tmp_path / "b.jsonl", '{"prompt": 3}\n'))
    with pytest.raises(DataError, match=r":1: field 'prompt' is empty"):
        read_prompts(write(tmp_path / "c.jsonl", '{"prompt": "  "}\n'))


def test_duplicate_ids(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n')
    with pytest.raises(DataError, match=r":2: duplicate id 'x' \(first seen on line 1\)"):
        read_prompts(f)


def test_split_filter_and_ids(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": 1, "prompt": "a", "split": "train"}\n{"prompt": "b", "split": "eval"}\n')
    assert [p.id for p in read_prompts(f, split="train")] == ["1"]
    (ev,) = read_prompts(f, split="eval")
    assert ev.prompt == "b" and len(ev.id) == 12 and ev.metadata == {"split": "eval"}


def test_prompts_without_split_are_split_by_hash_never_both(tmp_path, caplog):
    from rlhf.data import hash_split

    lines = "".join(f'{{"id": "p{i}", "prompt": "prompt {i}"}}\n' for i in range(200))
    f = write(tmp_path / "p.jsonl", lines)
    train, ev = read_prompts(f, split="train"), read_prompts(f, split="eval")
    assert {p.id for p in train}.isdisjoint({p.id for p in ev})
    assert len(train) + len(ev) == 200
    assert 20 <= len(ev) <= 60  # 20% expected
    assert all(hash_split(p.id) == "eval" and p.metadata["split"] == "eval" for p in ev)
    assert "200 prompt(s) have no 'split' field" in caplog.text
    assert len(read_prompts(f)) == 200  # no split asked: everything


def test_csv_parquet_and_datasets(tmp_path):
    import datasets

    rows = [{"prompt": "p1", "chosen": "good", "rejected": "bad"}, {"prompt": "p2", "chosen": "yes", "rejected": "no"}]
    pd.DataFrame(rows).to_csv(tmp_path / "x.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "x.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    for src in ("x.csv", "x.parquet", "ds"):
        pairs = read_pairs(tmp_path / src)
        assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("p1", "good", "bad"), ("p2", "yes", "no")]
    pd.DataFrame([{"prompt": "p", "chosen": "a"}]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv:2: missing field 'rejected'"):  # header is line 1
        read_pairs(tmp_path / "bad.csv")


def test_pairs_all_identical_is_an_error(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"prompt": "p", "chosen": "a", "rejected": "a"}\n')
    with pytest.raises(DataError, match="equals 'rejected' in every pair"):
        read_pairs(f)


def test_generations_need_completion_list(tmp_path):
    f = write(tmp_path / "g.jsonl", '{"id": "a", "prompt": "p", "completions": "oops"}\n')
    with pytest.raises(DataError, match=r"g\.jsonl:1: field 'completions'"):
        read_generations(f)


def test_generations_finished_flags_must_match_the_completions(tmp_path):
    ok = '{"prompt": "p", "completions": ["a", "b"], "metadata": {"finished": [true, false]}}\n'
    bad = '{"prompt": "q", "completions": ["a", "b"], "metadata": {"finished": [true]}}\n'
    assert read_generations(write(tmp_path / "ok.jsonl", ok))[0].metadata["finished"] == [True, False]
    with pytest.raises(DataError, match=r"g\.jsonl:2: field 'metadata.finished' must be a list of 2 booleans"):
        read_generations(write(tmp_path / "g.jsonl", ok + bad))


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unknown format"):
        read_prompts(write(tmp_path / "p.txt", "hello"))


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    f = tmp_path / "out.jsonl"
    write_jsonl(f, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_write(f) as fh:
            fh.write('{"a": 2}\n{"half')
            raise RuntimeError("crash")
    assert f.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_appender_drops_torn_last_line(tmp_path):
    f = tmp_path / "log.jsonl"
    f.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "tr', encoding="utf-8")
    with JsonlAppender(f) as log:
        assert [r["id"] for r in log.records] == ["a", "b"]
        log.append({"id": "c"})
    assert [json.loads(line)["id"] for line in f.read_text().splitlines()] == ["a", "b", "c"]
    assert os.path.getsize(f) == len(f.read_bytes())
