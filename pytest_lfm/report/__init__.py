"""The qualification report: one JSON and one Markdown file per run, and the tools that read them.

- :mod:`~pytest_lfm.report.notes`: the notes tests attach (:func:`note`), their kinds and payloads;
- :mod:`~pytest_lfm.report.schema`: the JSON's version, statuses, check records and computed tables;
- :mod:`~pytest_lfm.report.collector`: the session object that gathers a run and writes its files;
- :mod:`~pytest_lfm.report.markdown`: the table writer and the report's Markdown;
- :mod:`~pytest_lfm.report.compare`, :mod:`~pytest_lfm.report.merge`: ``pytest-lfm compare`` and ``merge``.
"""

from pytest_lfm.report.collector import PLUGIN_NAME, Report, register
from pytest_lfm.report.markdown import render_markdown
from pytest_lfm.report.notes import note, notes_of
from pytest_lfm.report.schema import (
    KEY_FIGURES,
    SCHEMA_VERSION,
    STATUSES,
    Check,
    fidelity_rows,
    grammar_rows,
    latency_rows,
    scripted_turn_rows,
)

__all__ = [
    "KEY_FIGURES",
    "PLUGIN_NAME",
    "SCHEMA_VERSION",
    "STATUSES",
    "Check",
    "Report",
    "fidelity_rows",
    "grammar_rows",
    "latency_rows",
    "note",
    "notes_of",
    "register",
    "render_markdown",
    "scripted_turn_rows",
]
