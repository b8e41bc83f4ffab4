"""Rendering: the terminal table, the HTML report with plots, JSON results. Only here (and in
the CLI) does megawatt print or write files; writes are atomic."""

from megawatt.report.files import (
    check_output_dir,
    check_output_file,
    write_atomic,
    write_folder,
    write_outputs,
)
from megawatt.report.html import html_report
from megawatt.report.sessions import demand_sessions_table, headline, images_line, sessions_table
from megawatt.report.table import demand_table, option_rows, results_table

__all__ = [
    "check_output_dir",
    "check_output_file",
    "demand_sessions_table",
    "demand_table",
    "headline",
    "html_report",
    "images_line",
    "option_rows",
    "results_table",
    "sessions_table",
    "write_atomic",
    "write_folder",
    "write_outputs",
]
