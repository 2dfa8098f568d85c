#!/usr/bin/env python3
"""The test report and the skip policy, over the JUnit XML of every suite (ctest's and pytest's).

    python3 scripts/test_report.py [--no-gpu] SUITE=FILE.xml ...

Prints each suite's passed / failed / skipped counts, then every skip reason with its count, and
last one line `N passed, N failed, N skipped`. Exits 1 when a test failed or errored, when a
suite's file is missing or has no test, or when a test was skipped for a reason the policy below
does not allow: a skipped suite must not pass for a green one.

The policy: a test may skip only because this machine has no GPU (and then only with --no-gpu,
which scripts/test.sh passes where `nvidia-smi -L` finds none), or for a reason in ALLOWED, each
with why it cannot be run here. Everything else is a failure of the run, printed as such.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# A skip that says the machine has no GPU: the C++ GPU suites' LIGERD_SKIP_WITHOUT_GPU ("no CUDA
# GPU on this machine"), the Python GPU suite's require_cuda ("no CUDA device").
NO_GPU = re.compile(r"\bno CUDA (GPU|device)\b")

# Skips allowed on any machine: (pattern, why).
ALLOWED = [
    (re.compile(r"\bneeds (at least )?(2|two) (CUDA )?(GPUs|devices)\b"),
     "the machine has one GPU: multi-GPU tests run on a multi-GPU machine"),
    (re.compile(r"^a (GPU|CUDA driver) is present\b"),
     "a test of the no-GPU path (what a GPU-less client sees); the GPU suites cover this machine"),
    (re.compile(r"\bGPU without thread-block clusters\b"),
     "a pre-Hopper GPU: the cluster kernel's fallback is already the kernel under test"),
]


def _reason(case: ET.Element, skipped: ET.Element) -> str:
    """The skip's reason: pytest puts it in the message; ctest writes a generic message and the
    test's own output (gtest's "Skipped" line and the reason under it) in system-out."""
    message = (skipped.get("message") or skipped.text or "").strip()
    out = case.findtext("system-out") or ""
    m = re.search(r"Skipped\s*\n\s*(\S[^\n]*)", out)
    if m and (not message or "SKIP_REGULAR_EXPRESSION" in message or message == "Skipped"):
        message = m.group(1).strip()
    # pytest: "path:line: reason" for module-level skips; keep the reason.
    return re.sub(r"^\S+:\d+: ", "", message) or "(no reason given)"


def read_suite(path: Path):
    root = ET.parse(path).getroot()
    cases = root.iter("testcase")
    counts = collections.Counter()
    skips = []
    failures = []
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            failures.append(name)
        elif skipped is not None or case.get("status") in ("notrun", "disabled"):
            counts["skipped"] += 1
            skips.append((name, _reason(case, skipped if skipped is not None else case)))
        else:
            counts["passed"] += 1
    return counts, skips, failures


def allowed(reason: str, no_gpu: bool):
    if no_gpu and NO_GPU.search(reason):
        return "no GPU on this machine"
    for pattern, why in ALLOWED:
        if pattern.search(reason):
            return why
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-gpu", action="store_true", help="this machine has no GPU: GPU-only skips are allowed")
    ap.add_argument("suites", nargs="+", metavar="SUITE=FILE.xml")
    args = ap.parse_args(argv)

    total = collections.Counter()
    bad = []
    by_reason = collections.Counter()
    print("\n== test report")
    for spec in args.suites:
        suite, _, file = spec.partition("=")
        path = Path(file or suite)
        if not path.is_file():
            print(f"{suite}: no JUnit XML at {path} (the suite did not run)")
            bad.append(f"{suite}: did not run")
            continue
        counts, skips, failures = read_suite(path)
        total.update(counts)
        print(f"{suite}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
        if sum(counts.values()) == 0:
            bad.append(f"{suite}: no test ran")
        for name in failures:
            print(f"  FAILED {name}")
        bad += [f"{suite}: {name} failed" for name in failures]
        for name, reason in skips:
            why = allowed(reason, args.no_gpu)
            by_reason[(suite, reason, why)] += 1
            if why is None:
                bad.append(f"{suite}: {name} skipped: {reason}")

    if by_reason:
        print("\nskip reasons (count, suite, reason -> why allowed):")
        for (suite, reason, why), n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1])):
            print(f"  {n:4d}  {suite}: {reason}  -> {why or 'NOT ALLOWED'}")
    if bad:
        print(f"\ntest: {len(bad)} problem(s):")
        for line in bad[:50]:
            print(f"  {line}")
        if len(bad) > 50:
            print(f"  ... and {len(bad) - 50} more")
    print(f"\n{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
