"""The runtimes side-by-side table (``profile.runtime_compare``) as HTML and as Markdown for the report."""

from __future__ import annotations

import html

from optiserve.profile.runtime_compare import RuntimeComparison, cell_text


def caption(cmp: RuntimeComparison) -> str:
    return f"{cmp.model}: measured p50 ms per runtime (best knobs), ratio to {cmp.baseline} (under 1x: faster)"


def html_table(name: str, cmp: RuntimeComparison) -> str:
    head = "<tr><th class=l>precision</th><th>batch</th><th>threads</th>"
    head += "".join(f"<th>{html.escape(r)}</th>" for r in cmp.runtimes) + "</tr>"
    rows = "".join(
        f"<tr><td class=l>{html.escape(r.precision)}</td><td>{r.batch}</td><td>{r.threads}</td>"
        + "".join(f"<td>{html.escape(cell_text(c))}</td>" for c in r.cells)
        + "</tr>"
        for r in cmp.rows
    )
    return f"<h3>{html.escape(name)}</h3><p class=muted>{html.escape(caption(cmp))}</p><table>{head}{rows}</table>"


def markdown_table(cmp: RuntimeComparison) -> list[str]:
    lines = [f"**{caption(cmp)}**", "", "| precision | batch | threads | " + " | ".join(cmp.runtimes) + " |"]
    lines.append("|---|--:|--:|" + "--:|" * len(cmp.runtimes))
    lines += [
        f"| {r.precision} | {r.batch} | {r.threads} | " + " | ".join(cell_text(c) for c in r.cells) + " |"
        for r in cmp.rows
    ]
    return [*lines, ""]
