"""junit.xml: one test case per criterion per target, for CI systems."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from soak.criteria import FAIL, INCONCLUSIVE, SKIPPED
from soak.model import RunSummary, to_json

#: Characters XML 1.0 cannot hold even escaped (control characters, lone surrogates,
#: U+FFFE and U+FFFF).
_INVALID_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: Any) -> str:
    """A string fit for an XML 1.0 attribute or text: invalid characters stripped (a
    server's thread name or error text may hold any); ElementTree escapes the rest."""
    return _INVALID_XML.sub("", "" if value is None else str(value))


def render_junit(summary: RunSummary) -> str:
    """JUnit XML: a testsuite per target, a testcase per criterion (failure, or skipped for
    a criterion not measured or not judged); an inconclusive target gets one skipped
    case `verdict` that says why, so CI never shows it as all green."""
    root = ET.Element("testsuites", name=_text(f"soak {summary.run_id}"))
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for name, target in summary.targets.items():
        checks = [to_json(c) for c in summary.checks_of(name)]
        if target.verdict == INCONCLUSIVE:
            reasons = "; ".join(target.verdict_reasons)
            checks.append({"expression": "verdict", "status": INCONCLUSIVE, "message": reasons})
        counts = {
            "tests": len(checks),
            "failures": sum(c["status"] == FAIL for c in checks),
            "skipped": sum(c["status"] in (SKIPPED, INCONCLUSIVE) for c in checks),
        }
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_text(f"soak.{name}"),
            timestamp=_text(summary.started_at_iso),
            time=f"{summary.duration_s:.3f}",
            errors="0",
            **{key: str(value) for key, value in counts.items()},
        )
        for check in checks:
            case = ET.SubElement(
                suite, "testcase", classname=_text(f"soak.{name}"), name=_text(check["expression"])
            )
            if check["status"] == FAIL:
                failure = ET.SubElement(
                    case, "failure", message=_text(check["message"]), type="criterion"
                )
                failure.text = _text(
                    f"{check['message']}\nvalue: {check['value']} {check['unit']}; "
                    f"threshold: {check['threshold']} {check['unit']}"
                )
            elif check["status"] in (SKIPPED, INCONCLUSIVE):
                message = f"{check['status']}: {check['message']}"
                ET.SubElement(case, "skipped", message=_text(message))
        totals = {key: totals[key] + counts[key] for key in totals}
    root.attrib.update({key: str(value) for key, value in totals.items()})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
