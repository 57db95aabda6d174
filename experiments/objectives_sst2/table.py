"""Collect the runs of run.sh into a Markdown table (stdout)."""

import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for path in sorted(out.rglob("results.json")):
    r = json.loads(path.read_text())
    if r["status"] != "ok":
        rows.append(f"| {path.parent.name} | failed: {r['error']} | | | |")
        continue
    over = dict(o.split("=", 1) for o in r["overrides"] if "=" in o)
    preset = over.get("distill", "teacher (fine-tuned, no KD)")
    extra = [f"{k.removeprefix('distill.')}={v}" for k, v in over.items()
             if k.startswith("distill.")]
    if extra:
        preset += f" ({', '.join(extra)})"
    student, teacher = r["student"], r["teacher"]
    retention = f"{r['retention']:.1%}" if r["retention"] else ""
    rows.append(f"| {preset} | {student['name']} | {student['params']:,} | "
                f"{student['score']:.4f} | {retention} |")
print("| objective | student | params | SST-2 dev acc | retention |")
print("|---|---|---:|---:|---:|")
print("\n".join(rows))
