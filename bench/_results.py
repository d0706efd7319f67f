"""Shared by the bench scripts: write a result JSON under bench/results/ and print it, headline last."""

import json
from pathlib import Path


def report(name: str, quick: bool, result: dict, headline: str) -> None:
    out = Path(__file__).parent / "results" / f"{name}{'_quick' if quick else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(headline)
