"""Logging formats: text for terminals, journal (priority on every line), JSON, and auto-detection."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from opd.logs import is_journal_stream, priority, setup_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logger.remove()
    logger.add(sys.stderr)  # loguru's own default, as other tests expect it
    root.handlers, root.level = handlers, level


def log_some(stream: io.StringIO) -> list[str]:
    logger.bind(plugin="good", object="default/ex1").info("created {braces} <red>kept</red>")
    logger.debug("a detail")
    logger.warning("careful")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.bind(plugin="good").exception("it failed")
    return stream.getvalue().splitlines()


def test_text_has_timestamps_levels_and_fields() -> None:
    stream = io.StringIO()
    assert setup_logging("debug", "text", stream=stream) == "text"
    lines = log_some(stream)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(stamp + r" INFO     \[plugin=good object=default/ex1\] created \{braces\} <red>kept</red>",
                        lines[0])
    assert re.fullmatch(stamp + r" DEBUG    a detail", lines[1])
    assert re.fullmatch(stamp + r" WARNING  careful", lines[2])
    assert re.fullmatch(stamp + r" ERROR    \[plugin=good\] it failed", lines[3])
    assert lines[4] == "Traceback (most recent call last):"
    assert lines[-2:] == ["ValueError: bad", "value"]
    assert "\x1b[" not in stream.getvalue()  # not a terminal: no colours


def test_journal_prefixes_every_line_with_its_priority() -> None:
    stream = io.StringIO()
    setup_logging("debug", "journal", stream=stream)
    lines = log_some(stream)
    assert lines[:4] == [
        "<6>[plugin=good object=default/ex1] created {braces} <red>kept</red>",
        "<7>a detail",
        "<4>careful",
        "<3>[plugin=good] it failed",
    ]
    assert lines[4] == "<3>Traceback (most recent call last):"
    assert lines[-2:] == ["<3>ValueError: bad", "<3>value"]
    assert all(re.match(r"<[2-7]>", line) for line in lines)  # tracebacks too: no line without a priority
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines)  # journald adds the time


def test_journal_priorities() -> None:
    assert [priority(logger.level(name).no) for name in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR",
                                                          "CRITICAL")] == [7, 7, 6, 5, 4, 3, 2]


def test_json_is_one_object_per_line() -> None:
    stream = io.StringIO()
    setup_logging("debug", "json", stream=stream)
    records = [json.loads(line) for line in log_some(stream)]
    assert len(records) == 4
    first = records[0]
    assert set(first) == {"time", "level", "message", "logger", "plugin", "object"}
    assert (first["level"], first["message"], first["plugin"], first["object"]) == (
        "INFO", "created {braces} <red>kept</red>", "good", "default/ex1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", first["time"])
    assert first["logger"] == __name__
    assert [r["level"] for r in records] == ["INFO", "DEBUG", "WARNING", "ERROR"]
    assert records[3]["exception"].startswith("Traceback (most recent call last):")
    assert records[3]["exception"].endswith("ValueError: bad\nvalue")


def test_json_keeps_odd_extras() -> None:
    stream = io.StringIO()
    setup_logging("info", "json", stream=stream)
    logger.bind(message="shadow", path=Path("/x"), count=3).info("real")
    record = json.loads(stream.getvalue())
    assert (record["message"], record["extra_message"], record["path"], record["count"]) == ("real", "shadow", "/x", 3)


def test_the_level_filters() -> None:
    stream = io.StringIO()
    setup_logging("warning", "journal", stream=stream)
    logger.info("hidden")
    logger.error("shown")
    assert stream.getvalue() == "<3>shown\n"


def test_set_up_twice_logs_once() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "text", stream=first)
    setup_logging("info", "journal", stream=second)
    logger.info("once")
    assert (first.getvalue(), second.getvalue()) == ("", "<6>once\n")


def test_stdlib_logging_is_routed_with_its_logger_name() -> None:
    stream = io.StringIO()
    setup_logging("info", "journal", stream=stream)
    logging.getLogger("acme.plugin").warning("from %s", "stdlib")
    logging.getLogger("aiohttp.client").debug("noise")
    assert stream.getvalue() == "<4>[logger=acme.plugin] from stdlib\n"

    stream = io.StringIO()
    setup_logging("info", "json", stream=stream)
    logging.getLogger("acme.plugin").error("again")
    record = json.loads(stream.getvalue())
    assert (record["logger"], record["message"], record["level"]) == ("acme.plugin", "again", "ERROR")


def test_contextualized_fields_show() -> None:
    stream = io.StringIO()
    setup_logging("info", "text", stream=stream)
    with logger.contextualize(plugin="dns"):
        logger.bind(object="ns/a b").info("hi")
    assert stream.getvalue().rstrip().endswith('[plugin=dns object="ns/a b"] hi')


def test_auto_is_journal_only_on_the_journals_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stderr", "w+") as stream:
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        assert is_journal_stream(stream)
        assert setup_logging("info", "auto", stream=stream) == "journal"
        logger.info("to the journal")
        stream.seek(0)
        assert stream.read() == "<6>to the journal\n"

        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino + 1}")  # another file: inherited
        assert setup_logging("info", "auto", stream=stream) == "text"
        monkeypatch.delenv("JOURNAL_STREAM")
        assert setup_logging("info", "auto", stream=stream) == "text"
    assert not is_journal_stream(io.StringIO())  # no file descriptor at all


def test_default_stream_is_stderr_at_write_time(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "journal")
    logger.info("late")
    assert capsys.readouterr().err == "<6>late\n"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="log level: expected one of"):
        setup_logging("loud", "text")
    with pytest.raises(ValueError, match="log format: expected one of"):
        setup_logging("info", "xml")
