"""Shared by the bench scripts: the command line, and a result JSON under bench/results/ printed headline-last."""

import argparse
import json
from pathlib import Path


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the script's docstring as help and the ``--quick`` (CI) switch."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    return parser


def report(name: str, quick: bool, result: dict, headline: str) -> None:
    out = Path(__file__).parent / "results" / f"{name}{'_quick' if quick else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(headline)
