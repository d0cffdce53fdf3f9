"""Reporting a gate run: human (rich), json, github (workflow commands) and junit (XML).

rich is imported only by the human reporter: the machine formats stay light.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import IO

from triton_ops.findings import CheckResult, Finding, Severity

FORMATS = ("human", "json", "github", "junit")


def files_of(result: CheckResult) -> list[str]:
    """Every file checked that the result knows by name, plus every file with a finding."""
    names = set(getattr(result, "files", ()) or ()) | {f.file for f in result.findings}
    return sorted(names)


def summary_line(result: CheckResult) -> str:
    errors, warnings = len(result.errors), len(result.warnings)
    infos = len(result.findings) - errors - warnings
    parts = [f"{errors} error{'s' * (errors != 1)}", f"{warnings} warning{'s' * (warnings != 1)}"]
    if infos:
        parts.append(f"{infos} note{'s' * (infos != 1)}")
    checked = result.files_checked
    return f"{checked} file{'s' * (checked != 1)} checked: {', '.join(parts)}"


def render_json(result: CheckResult) -> str:
    return json.dumps({
        "findings": [f.to_dict() for f in result.sorted()],
        "files_checked": result.files_checked,
        "errors": len(result.errors),
        "warnings": len(result.warnings),
    }, indent=2)


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


_GITHUB_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def render_github(result: CheckResult) -> str:
    """GitHub Actions workflow commands: each finding becomes an annotation on its line."""
    lines = []
    for f in result.sorted():
        props = [f"file={_escape_property(f.file)}"]
        if f.line > 0:
            props.append(f"line={f.line}")
            if f.column > 0:
                props.append(f"col={f.column}")
        props.append(f"title={_escape_property(f.rule)}")
        lines.append(f"::{_GITHUB_LEVEL[f.severity]} {','.join(props)}::"
                     f"{_escape_data(f.message)}")
    lines.append(summary_line(result))
    return "\n".join(lines)


def render_junit(result: CheckResult, strict: bool = False) -> str:
    """JUnit XML: one testcase per file; its findings are the failure (warnings too if strict)."""
    import xml.etree.ElementTree as ET

    by_file: dict[str, list[Finding]] = defaultdict(list)
    for f in result.sorted():
        by_file[f.file].append(f)
    files = files_of(result)
    failing = [name for name in files if any(_fails(f, strict) for f in by_file[name])]
    suite = ET.Element("testsuite", {
        "name": "triton-ops validate", "tests": str(len(files)),
        "failures": str(len(failing)), "errors": "0", "skipped": "0",
    })
    for name in files:
        case = ET.SubElement(suite, "testcase", {"classname": "triton-ops.validate",
                                                 "name": name, "file": name})
        findings = by_file[name]
        text = "\n".join(f"{f.file}:{f.line}:{f.column}: {f.severity.value} [{f.rule}] "
                         f"{f.message}" for f in findings)
        failures = [f for f in findings if _fails(f, strict)]
        if failures:
            first = failures[0]
            failure = ET.SubElement(case, "failure", {
                "type": first.rule,
                "message": (f"{len(failures)} problem(s); first: line {first.line}: "
                            f"{first.message}"),
            })
            failure.text = text
        elif findings:
            ET.SubElement(case, "system-out").text = text
    suites = ET.Element("testsuites", {"name": "triton-ops", "tests": str(len(files)),
                                       "failures": str(len(failing))})
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _fails(finding: Finding, strict: bool) -> bool:
    return finding.severity is Severity.ERROR or (strict and finding.severity is Severity.WARNING)


_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def render_human(result: CheckResult, stream: IO[str] | None = None) -> None:
    """A table of findings per file and a summary line, for a terminal or a CI log."""
    import os

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream, highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # CI logs are wide; rich would assume 80 columns
    by_file: dict[str, list[Finding]] = defaultdict(list)
    for f in result.sorted():
        by_file[f.file].append(f)
    for name, findings in by_file.items():
        table = Table(title=Text(name, style="bold"), title_justify="left", show_edge=False,
                      expand=False, pad_edge=False)
        table.add_column("where", no_wrap=True)
        table.add_column("severity", no_wrap=True)
        table.add_column("rule", no_wrap=True)
        table.add_column("message", overflow="fold")
        for f in findings:
            where = f"{f.line}:{f.column}" if f.line else "-"
            table.add_row(where, Text(f.severity.value, style=_STYLE[f.severity]), f.rule,
                          Text(f.message))
        console.print(table)
        console.print()
    style = "bold red" if result.errors else ("yellow" if result.warnings else "green")
    console.print(Text(summary_line(result), style=style))


def exit_code(result: CheckResult, strict: bool) -> int:
    """0 when clean, 1 when there are errors (or warnings with strict)."""
    if result.errors or (strict and result.warnings):
        return 1
    return 0
