"""Build the paper: fill the generated tables and quoted numbers into paper.src.md.

``{{n:key}}`` is replaced by ``paper/numbers/numbers.json[key]`` and ``{{table:name}}`` by
the table of that name in ``paper/numbers/tables.md`` (both written by
``experiments/tab_results.py`` from recorded results). A placeholder without a
recorded value is an error, so the text cannot quote a number that was not measured.
Output: ``paper/build/paper.md`` and ``paper/build/paper.html``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def tables(text: str) -> dict[str, str]:
    parts = re.split(r"<!-- table:(\w+) -->\n", text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def main() -> int:
    numbers = json.loads((HERE / "numbers" / "numbers.json").read_text())
    tabs = tables((HERE / "numbers" / "tables.md").read_text())
    src = (HERE / "paper.src.md").read_text()
    missing: list[str] = []

    def fill(m: re.Match) -> str:
        kind, key = m.group(1), m.group(2)
        value = numbers.get(key) if kind == "n" else tabs.get(key)
        if value in (None, ""):
            missing.append(f"{kind}:{key}")
            return "**(not recorded)**"
        return f"{value:,}" if isinstance(value, int) else str(value)

    text = re.sub(r"\{\{(n|table):([\w.]+)\}\}", fill, src)
    out = HERE / "build"
    out.mkdir(exist_ok=True)
    if (out / "figures").exists():
        shutil.rmtree(out / "figures")
    shutil.copytree(HERE / "figures", out / "figures")
    (out / "paper.md").write_text(text)
    import markdown

    html = markdown.markdown(text, extensions=["tables"])
    (out / "paper.html").write_text(
        f"<html><head><meta charset='utf-8'><title>mpc_fl</title></head><body>{html}</body></html>"
    )
    print(f"wrote {out / 'paper.md'} and paper.html")
    if missing:
        print("placeholders without recorded results: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
