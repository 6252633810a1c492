"""Logging setup: loguru with one sink on stderr, in the shape its reader wants.

- ``text``: timestamps and colours, for a person at a terminal;
- ``journal``: no timestamps (journald adds its own), a syslog priority prefix ``<N>`` on
  every line, tracebacks included, so ``journalctl -p warning`` finds every line of a record;
- ``json``: one object per line, for log shippers;
- ``auto``: ``journal`` when stderr is the journal's stream (``$JOURNAL_STREAM``), else ``text``.

Fields bound with ``logger.bind(plugin=..., object=...)`` (or ``logger.contextualize``) show in
every format. The stdlib ``logging`` (plugins, kubernetes_asyncio, aiohttp) is routed here too.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

LEVELS = ("trace", "debug", "info", "warning", "error")
FORMATS = ("auto", "text", "json", "journal")
# Fields shown first, in this order; the rest follow sorted. Names starting with "_" are internal.
FIELD_ORDER = ("plugin", "object")
_FIELDS = "_opd_fields"


def setup_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> str:
    """Replace every loguru sink (its default one included) by one on ``stream``; returns the format used.

    ``stream`` defaults to ``sys.stderr`` as it is at each write (so redirections made later hold).
    Safe to call again, e.g. on SIGHUP with a new level.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"log level: expected one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        fmt = "journal" if is_journal_stream(stream or sys.stderr) else "text"
    logger.remove()
    common: dict[str, Any] = {"level": level.upper(), "backtrace": False, "diagnose": False}
    if fmt == "text":
        target = stream or sys.stderr
        colour = target.isatty() and not os.environ.get("NO_COLOR")
        logger.add(_writer(stream), format=_text_format, colorize=colour, **common)
    elif fmt == "journal":
        logger.add(_journal_sink(stream), format=_journal_format, colorize=False, **common)
    else:
        logger.add(_json_sink(stream), format="{message}", colorize=False, **common)
    _route_stdlib_logging()
    return fmt


class LogFormat(enum.Enum):
    """Kopf's log formats, for ``configure(log_format=...)``: PLAIN and FULL are opd's ``text``."""

    PLAIN = "text"
    FULL = "text"  # an alias of PLAIN: opd's text lines always carry the time and level
    JSON = "json"


def configure(*, debug: bool | None = None, verbose: bool | None = None, quiet: bool | None = None,
              log_format: LogFormat | str = LogFormat.FULL, log_prefix: bool | None = None,
              log_refkey: str | None = None) -> None:
    """Kopf's ``kopf.configure()`` for embedded operators: opd's logging on stderr, at debug level
    with ``verbose`` or ``debug``, warnings and errors only with ``quiet``, else info.
    ``log_prefix`` and ``log_refkey`` are accepted: opd's lines always name their object."""
    del log_prefix, log_refkey
    level = "debug" if debug or verbose else "warning" if quiet else "info"
    fmt = log_format.value if isinstance(log_format, LogFormat) else {"plain": "text", "full": "text"}.get(
        str(log_format), str(log_format))
    setup_logging(level, fmt)


def is_journal_stream(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's: systemd sets ``JOURNAL_STREAM=dev:inode`` of what it connected."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind it (tests, captured output)
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


def priority(levelno: int) -> int:
    """The syslog priority of a level number: 3 error, 4 warning, 5 notice, 6 info, 7 debug."""
    for floor, prio in ((50, 2), (40, 3), (30, 4), (25, 5), (20, 6)):
        if levelno >= floor:
            return prio
    return 7


def _fields(extra: dict[str, Any]) -> str:
    keys = [k for k in FIELD_ORDER if k in extra]
    keys += sorted(k for k in extra if k not in FIELD_ORDER and not k.startswith("_"))
    parts = []
    for key in keys:
        text = str(extra[key])
        parts.append(f"{key}={json.dumps(text) if not text or any(c.isspace() for c in text) else text}")
    return f"[{' '.join(parts)}] " if parts else ""


# Format functions return templates: values go through {extra[...]}, never into the template
# itself, so braces or colour tags in a message or a field stay literal.


_TEXT = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <8}</level> "
         "<cyan>{extra[_opd_fields]}</cyan>{message}\n{exception}")
_JOURNAL = "{extra[_opd_fields]}{message}\n{exception}"


def _text_format(record: Record) -> str:
    record["extra"][_FIELDS] = _fields(record["extra"])
    return _TEXT


def _journal_format(record: Record) -> str:
    record["extra"][_FIELDS] = _fields(record["extra"])
    return _JOURNAL


def _writer(stream: TextIO | None) -> Callable[[Message], None]:
    def write(message: Message) -> None:
        target = stream or sys.stderr
        target.write(message)
        target.flush()

    return write


def _journal_sink(stream: TextIO | None) -> Callable[[Message], None]:
    def write(message: Message) -> None:
        prefix = f"<{priority(message.record['level'].no)}>"
        lines = str(message).rstrip("\n").split("\n")
        target = stream or sys.stderr
        target.write("".join(f"{prefix}{line}\n" for line in lines))  # one write: lines stay together
        target.flush()

    return write


def _json_sink(stream: TextIO | None) -> Callable[[Message], None]:
    def write(message: Message) -> None:
        record = message.record
        data: dict[str, Any] = {
            "time": record["time"].isoformat(timespec="milliseconds"),
            "level": record["level"].name,
            "message": record["message"],
            # A stdlib record names its own logger (aiohttp, a plugin's); loguru's is the module.
            "logger": record["extra"].get("logger", record["name"]),
        }
        for key, value in record["extra"].items():
            if not key.startswith("_") and key != "logger":
                data[key if key not in data else f"extra_{key}"] = value
        exc = record["exception"]
        if exc is not None:
            data["exception"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback)).rstrip()
        target = stream or sys.stderr
        target.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
        target.flush()

    return write


class _Intercept(logging.Handler):
    """Hands stdlib logging records to loguru, keeping their level, logger name and exception."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).bind(logger=record.name).log(level, record.getMessage())


def _route_stdlib_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _Intercept) for h in root.handlers):
        root.handlers = [_Intercept()]
    # The stdlib passes INFO and up; loguru's sink level filters the rest (aiohttp's DEBUG is noise).
    root.setLevel(logging.INFO)
