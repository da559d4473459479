"""Settings errors name the setting; file readers name row and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer.adapters.files import ColumnMap, read_headlines
from streamer.config.settings import load_settings
from streamer.domain.errors import ConfigError, InputError


def test_defaults_load() -> None:
    """No environment -> defaults (Milvus Lite file, bundled model)."""
    s = load_settings()
    assert s.milvus.uri.endswith(".db") and s.embedding.model == "all-MiniLM-L6-v2"


def test_env_nested_and_case_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    """STREAMER_SECTION__FIELD reaches nested fields; enum-like strings are case-normalised."""
    monkeypatch.setenv("STREAMER_CLUSTERING__SELECTION_METHOD", "EOM")
    monkeypatch.setenv("STREAMER_MILVUS__METRIC", "ip")
    s = load_settings()
    assert s.clustering.selection_method == "eom" and s.milvus.metric == "IP"


def test_bad_value_names_setting_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error names section.field, the variable and the allowed values."""
    monkeypatch.setenv("STREAMER_MILVUS__METRIC", "L2")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "milvus.metric" in str(err.value) and "STREAMER_MILVUS__METRIC" in str(err.value) and "COSINE" in str(err.value)


def test_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI overrides (init arguments) win over the environment."""
    monkeypatch.setenv("STREAMER_GRAPH__K", "30")
    assert load_settings({"graph": {"k": 12}}).graph.k == 12


def test_sasl_without_password_is_refused() -> None:
    """SASL needs mechanism, user and password; the message lists what is missing."""
    with pytest.raises(ConfigError, match="sasl_password"):
        load_settings({"kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u"}})


def test_password_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """SecretStr hides the password in str/repr and in validation errors."""
    monkeypatch.setenv("STREAMER_KAFKA__SASL_PASSWORD", "hunter2-secret")
    s = load_settings()
    assert "hunter2-secret" not in repr(s) and "hunter2-secret" not in str(s.kafka)


def test_lite_uri_must_end_in_db() -> None:
    """A path that is neither a server nor a .db file is refused."""
    with pytest.raises(ConfigError, match="milvus"):
        load_settings({"milvus": {"uri": "/tmp/vectors"}})


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_csv_with_mapped_columns(tmp_path: Path) -> None:
    """Column names are mappable; ids and labels are read."""
    path = _write(tmp_path, "h.csv", "key,headline,grp\n1,Hello world,a\n2,Other news,b\n")
    records, problems = read_headlines(path, columns=ColumnMap.with_overrides(id="key", title="headline", label="grp"))
    assert [(r.headline.id, r.label) for r in records] == [("1", "a"), ("2", "b")] and problems == []


def test_empty_file(tmp_path: Path) -> None:
    """An empty file is a clear error."""
    with pytest.raises(InputError, match="empty"):
        read_headlines(_write(tmp_path, "e.csv", ""))


def test_missing_title_column(tmp_path: Path) -> None:
    """No title column -> the message lists what was looked for and what the header has."""
    with pytest.raises(InputError, match="no title column"):
        read_headlines(_write(tmp_path, "m.csv", "id,body\n1,x\n"))


def test_bad_encoding_names_the_row(tmp_path: Path) -> None:
    """Invalid UTF-8 -> the row number of the bad byte."""
    with pytest.raises(InputError, match="row 3: not valid UTF-8"):
        read_headlines(_write(tmp_path, "b.csv", b"id,title\n1,ok\n2,bad \xff byte\n"))


def test_empty_title_names_row_and_column(tmp_path: Path) -> None:
    """An empty title is reported with its row and column."""
    with pytest.raises(InputError, match="row 3: column 'title'"):
        read_headlines(_write(tmp_path, "t.csv", "id,title\n1,ok\n2,\n"))


def test_huge_title_is_refused(tmp_path: Path) -> None:
    """A 1 MB title is an error naming the row, not a crash."""
    with pytest.raises(InputError, match="row 2: column 'title'"):
        read_headlines(_write(tmp_path, "big.csv", "id,title\n1," + "x" * 1_000_000 + "\n"))


def test_skip_invalid_drops_and_reports(tmp_path: Path) -> None:
    """With skip_invalid the good rows are kept and the bad ones reported."""
    records, problems = read_headlines(_write(tmp_path, "s.csv", "id,title\n1,ok\n2,\n3,fine\n"), skip_invalid=True)
    assert [r.headline.id for r in records] == ["1", "3"] and len(problems) == 1


def test_jsonl_and_duplicates(tmp_path: Path) -> None:
    """JSONL is read; a repeated id keeps the first row and is reported."""
    lines = [json.dumps({"id": "a", "title": "one"}), json.dumps({"id": "a", "title": "two"}), ""]
    records, problems = read_headlines(_write(tmp_path, "h.jsonl", "\n".join(lines)))
    assert [r.headline.title for r in records] == ["one"] and "duplicate id" in problems[0]


def test_tsv_window(tmp_path: Path) -> None:
    """skip/limit select a window of rows; TSV has no quoting (titles may contain quotes)."""
    rows = "".join(f'{i}\tsay "{i}"\tS{i % 2}\n' for i in range(10))
    records, _ = read_headlines(_write(tmp_path, "u.tsv", "ID\tTITLE\tSTORY\n" + rows), skip=2, limit=3)
    assert [r.headline.title for r in records] == ['say "2"', 'say "3"', 'say "4"']


def test_unknown_extension(tmp_path: Path) -> None:
    """Only .csv, .tsv and .jsonl are read."""
    with pytest.raises(InputError, match="unknown file type"):
        read_headlines(_write(tmp_path, "x.xlsx", "a"))


def test_k_must_cover_min_samples() -> None:
    """A graph with fewer neighbours than min_samples is refused across sections, naming both."""
    with pytest.raises(ConfigError, match=r"graph.k \(2\) must be >= clustering.min_samples \(3\)"):
        load_settings({"graph": {"k": 2}, "clustering": {"min_samples": 3}})
