"""Run polars' own unit tests through ``DaskEngine`` and summarise what the shadow check saw.

    python tests/conformance/run.py                      # operations + lazyframe, 2 workers
    python tests/conformance/run.py --baseline           # also a plain-polars run to compare
    python tests/conformance/run.py tests/unit/operations/test_join.py -- -k coalesce

polars' tests are not on the package registry: they come from the tarball in
``../shared/reference/polars-tests/`` (see its SOURCE.md), unpacked once into
``.cache/polars-tests/`` of this checkout, never copied into the tree. The plugin
(``polars_hpc_conformance.py`` beside this file) does the routing and the per-collect checks;
this script prepares the run and prints the numbers issue 18 asks for. Exit status: 1 when any
routed collect gave a wrong answer, else 0.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parents[1]
TARBALL: Final = REPO.parent / "shared/reference/polars-tests/polars-py-tests-4db92c12c0.tar.gz"
TARBALL_SHA256: Final = "d604f885d7a8d59a5e4ff2fb25a5b237a535cac3eb777f59ae6cbfc91c34713e"
CACHE: Final = REPO / ".cache/polars-tests/4db92c12c0"
DEFAULT_PATHS: Final = ("tests/unit/operations", "tests/unit/lazyframe")
POLARS_DEFAULT_MARKERS: Final = (
    "not slow and not write_disk and not release and not docs and not hypothesis "
    "and not benchmark and not ci_only"
)


def unpack_polars_tests(tarball: Path = TARBALL, cache: Path = CACHE) -> Path:
    """``py-polars`` of the reference tarball, unpacked into ``cache`` once (checksum checked)."""
    root = cache / "py-polars"
    if (root / "tests/unit/conftest.py").exists():
        return root
    if not tarball.exists():
        raise FileNotFoundError(
            f"polars' tests are not at {tarball}: the conformance run reads them from the "
            "shared reference folder beside the checkout (../shared/reference/polars-tests)"
        )
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise ValueError(f"{tarball} has sha256 {digest}, expected {TARBALL_SHA256}")
    cache.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(cache, filter="data")
    return root


def pytest_command(
    paths: Sequence[str], report: Path, *, workers: int, route: bool, extra: Sequence[str]
) -> list[str]:
    """The pytest command line, run from polars' ``py-polars`` folder."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "polars_hpc_conformance",
        "-p",
        "no:cacheprovider",
        "-c",
        "pyproject.toml",
        "--rootdir",
        ".",
        "-o",
        "addopts=",
        "--import-mode=importlib",
        "-m",
        POLARS_DEFAULT_MARKERS,
        "-W",
        "ignore::pytest.PytestRemovedIn10Warning",
        "-q",
        "--tb=no",
        "--timeout",
        "300",
        "--conformance-report",
        str(report),
        "--conformance-workers",
        str(workers),
    ]
    if not route:
        command.append("--conformance-no-route")
    return [*command, *extra, *paths]


def run_pytest(root: Path, command: list[str]) -> int:
    """Run polars' tests with our plugin importable (and polars' ``tests`` package first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(HERE), str(REPO)])
    env.setdefault("POLARS_HPC_PROGRESS", "0")
    return subprocess.call(command, cwd=root, env=env)


def read_records(report: Path) -> list[dict[str, Any]]:
    """The JSON lines the plugin wrote."""
    return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def outcomes_by_test(records: list[dict[str, Any]]) -> dict[str, str]:
    """Per test: ``passed``, ``failed`` or ``skipped`` (a failed setup or teardown fails it)."""
    outcomes: dict[str, str] = {}
    for record in records:
        if record["kind"] != "test":
            continue
        decisive = record["outcome"] != "passed" or record["when"] == "call"
        if decisive and outcomes.get(record["test"]) != "failed":
            outcomes[record["test"]] = record["outcome"]
    return outcomes


def summarise(records: list[dict[str, Any]], baseline: dict[str, str] | None) -> dict[str, Any]:
    """The numbers of issue 18: tests passing, wrong answers, fallback share, reasons."""
    outcomes = outcomes_by_test(records)
    collects = [r for r in records if r["kind"] == "collect"]
    judged = collections.Counter(r["outcome"] for r in collects)
    fell_back = [r for r in collects if r["fallbacks"]]
    reasons = collections.Counter(reason for r in fell_back for reason in set(r["fallbacks"]))
    considered = (
        outcomes
        if baseline is None
        else {test: outcome for test, outcome in outcomes.items() if baseline.get(test) == "passed"}
    )
    failing = sorted(test for test, outcome in considered.items() if outcome == "failed")
    wrong = [r for r in collects if r["outcome"] == "wrong"]
    errors = [r for r in collects if r["outcome"] == "engine_error"]
    return {
        "tests": len(considered),
        "tests_passed": sum(1 for o in considered.values() if o == "passed"),
        "tests_failed": len(failing),
        "collects_routed": len(collects),
        "collects_by_outcome": dict(judged),
        "collects_fell_back": len(fell_back),
        "fallback_share": round(len(fell_back) / max(len(collects), 1), 4),
        "top_fallback_reasons": reasons.most_common(40),
        "wrong_answers": [(r["test"], r["detail"]) for r in wrong],
        "engine_errors": collections.Counter(r["detail"][:160] for r in errors).most_common(60),
        "failing_tests": failing,
        "baseline": baseline is not None,
    }


def print_summary(summary: dict[str, Any]) -> None:
    """A short human table; the whole summary is in the JSON file."""
    judged = summary["collects_by_outcome"]
    against = " (of those passing on plain polars)" if summary["baseline"] else ""
    print(f"tests{against}: {summary['tests']}")
    print(f"  passing through DaskEngine: {summary['tests_passed']}")
    print(f"  failing: {summary['tests_failed']}")
    print(f"collects routed: {summary['collects_routed']}")
    for outcome in ("equal", "order", "wrong", "engine_error", "both_raised"):
        print(f"  {outcome}: {judged.get(outcome, 0)}")
    print(
        f"  fell back to one rank: {summary['collects_fell_back']} "
        f"({100 * summary['fallback_share']:.1f}%)"
    )
    for test, detail in summary["wrong_answers"]:
        print(f"WRONG {test}: {detail}")


_PYTEST_RAN: Final = (0, 1)
"""pytest's exit statuses for a run that executed the tests (1: some failed)."""


def _refuse(status: int, which: str) -> int:
    print(f"{which} did not run polars' tests (pytest exit status {status}); see above")
    return 2


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="Run polars' unit tests through DaskEngine with a shadow check.",
        epilog="Arguments after '--' go to pytest as they are.",
    )
    parser.add_argument(
        "paths", nargs="*", default=list(DEFAULT_PATHS), help="polars test paths (py-polars/...)"
    )
    parser.add_argument("--workers", type=int, default=2, help="DaskEngine workers (default 2)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / ".cache/conformance",
        help="folder for the JSON reports (default .cache/conformance)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run the same tests on plain polars; count only tests that pass there",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    return parser.parse_args(ours), extra


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(argv)
    root = unpack_polars_tests()
    args.out = args.out.resolve()  # pytest runs in polars' folder
    args.out.mkdir(parents=True, exist_ok=True)
    baseline = None
    if args.baseline:
        plain = args.out / "baseline.jsonl"
        status = run_pytest(
            root, pytest_command(args.paths, plain, workers=0, route=False, extra=extra)
        )
        if status not in _PYTEST_RAN:
            return _refuse(status, "the plain-polars baseline")
        baseline = outcomes_by_test(read_records(plain))
    report = args.out / "routed.jsonl"
    command = pytest_command(args.paths, report, workers=args.workers, route=True, extra=extra)
    status = run_pytest(root, command)
    if status not in _PYTEST_RAN:
        return _refuse(status, "the routed run")
    summary = summarise(read_records(report), baseline)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_summary(summary)
    print(f"full summary: {args.out / 'summary.json'}")
    return 1 if summary["wrong_answers"] else 0


if __name__ == "__main__":
    sys.exit(main())
