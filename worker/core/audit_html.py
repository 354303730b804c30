"""The audit report as one self-contained HTML page: the verdict, the day's totals, every table of the report
and one chart (the day by hour and type, inline SVG). No script, no external stylesheet, font or image: it opens
from a mail attachment or an SFTP folder as it is. Every value is escaped."""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import Any

from worker.core.audit import TYPES

COLOURS = {"IN_STORE": "#2b6cb0", "SEND_SALE": "#dd6b20", "MIXED": "#38a169", "RETURN": "#c53030"}
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1a202c}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;margin:4px 0 12px;font-size:13px}
th,td{border:1px solid #cbd5e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#edf2f7} td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#276749;font-weight:600} .bad{color:#c53030;font-weight:600} .muted{color:#718096}
.verdict{font-size:18px;padding:8px 12px;border-radius:4px;display:inline-block;margin:8px 0}
.verdict.ok{background:#f0fff4;border:1px solid #9ae6b4} .verdict.bad{background:#fff5f5;border:1px solid #feb2b2}
"""


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="muted">-</td>'
    text = escape(str(value))
    numeric = isinstance(value, int | Decimal) or (
        isinstance(value, str) and value.replace("-", "", 1).replace(".", "", 1).isdigit()
    )
    return f'<td class="n">{text}</td>' if numeric else f"<td>{text}</td>"


def _table(columns: list[str], rows: list[list[Any]], table_id: str, empty: str = "none") -> str:
    if not rows:
        return f'<p class="muted" id="{escape(table_id)}">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table id="{escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def hour_chart(by_hour: list[dict[str, Any]]) -> str:
    """Stacked bars, one per hour of the store-local day, one colour per order type (returns below zero)."""
    width, height, left, top, bottom = 790, 240, 86, 16, 36
    plot_h = height - top - bottom
    ups = [Decimal(0)] * 24
    downs = [Decimal(0)] * 24
    for item in by_hour:
        amount = Decimal(item["total"])
        if amount >= 0:
            ups[item["hour"]] += amount
        else:
            downs[item["hour"]] += -amount
    top_value = max([*ups, Decimal(1)])
    low_value = max(downs)
    scale = Decimal(plot_h) / (top_value + low_value)
    zero_y = top + float(top_value * scale)
    bar_w = (width - left - 8) / 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="hour-chart" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="the day by hour and type">',
        f'<line x1="{left}" y1="{zero_y:.1f}" x2="{width - 8}" y2="{zero_y:.1f}" stroke="#4a5568"/>',
        f'<text x="{left - 6}" y="{top + 10}" font-size="11" text-anchor="end">{escape(str(top_value))}</text>',
        f'<text x="{left - 6}" y="{zero_y + 4:.1f}" font-size="11" text-anchor="end">0</text>',
    ]
    up_base = [zero_y] * 24
    down_base = [zero_y] * 24
    for kind in TYPES:
        for item in by_hour:
            if item["type"] != kind:
                continue
            hour, amount = item["hour"], Decimal(item["total"])
            h = float(abs(amount) * scale)
            x = left + hour * bar_w + 2
            if amount >= 0:
                up_base[hour] -= h
                y = up_base[hour]
            else:
                y = down_base[hour]
                down_base[hour] += h
            label = f"{hour:02d}:00 {kind}: {item['orders']} orders, {item['total']}"
            parts.append(
                f'<rect class="bar" data-hour="{hour}" data-type="{escape(kind)}" x="{x:.1f}" y="{y:.1f}"'
                f' width="{bar_w - 4:.1f}" height="{max(h, 0.5):.1f}"'
                f' fill="{COLOURS.get(kind, "#718096")}"><title>{escape(label)}</title></rect>'
            )
    for hour in range(0, 24, 2):
        x = left + hour * bar_w + bar_w / 2
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 14}" font-size="11" text-anchor="middle">{hour:02d}</text>'
        )
    legend_x = left
    for kind in TYPES:
        parts.append(
            f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" fill="{COLOURS[kind]}"/>'
            f'<text x="{legend_x + 14}" y="{height - 5}" font-size="11">{kind}</text>'
        )
        legend_x += 110
    parts.append("</svg>")
    return "".join(parts)


def report_html(document: dict[str, Any]) -> str:
    """The whole report as a page."""
    d = document
    consistent = bool(d.get("consistent"))
    title = f"Audit of {d['retailer']} for {d['business_date']}"
    verdict = (
        '<div class="verdict ok" id="verdict">consistent: every file and every cent accounted for</div>'
        if consistent
        else f'<div class="verdict bad" id="verdict">not consistent: {d.get("differences_count", 0)}'
        " difference(s) to look at</div>"
    )
    files = d.get("files", {})
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">store-local business day; time zone of the audit {escape(str(d.get("time_zone", "")))}</p>',
        verdict,
        "<h2>Totals of the day</h2>",
        _table(["type", "total"], [[t, v] for t, v in d["totals"].items()], "totals"),
        "<h2>The day by hour and type</h2>",
        hour_chart(d.get("by_hour", [])),
        "<h2>Differences</h2>",
        _table(
            ["subject", "kind", "what", "explained"],
            [[x["subject"], x["kind"], x["text"], x.get("explained")] for x in d.get("differences", [])],
            "differences",
            "no difference",
        ),
        "<h2>Files per store</h2>",
        _table(
            ["store", *[c.replace("_", " ") for c in files.get("totals", {})]],
            [[r["store"], *[r[c] for c in files.get("totals", {})]] for r in files.get("by_store", [])],
            "files",
            "no file",
        ),
    ]
    for kind in ("failed", "skipped", "conflict", "in_flight", "duplicate", "replayed", "unknown"):
        listed = files.get(kind) or []
        if listed:
            sections.append(f"<h2>Files {kind.replace('_', ' ')}</h2>")
            sections.append(
                _table(
                    ["ledger id", "file", "store", "reason", "day from"],
                    [[x["ledger_id"], x["file"], x["store"], x["reason"], x["day_from"]] for x in listed],
                    f"files-{kind}",
                )
            )
    sections += [
        "<h2>Per store and type</h2>",
        _table(
            [
                "store",
                "type",
                "orders",
                "units",
                "merchandise",
                "discounts",
                "tax",
                "shipping",
                "total",
                "tenders",
                "ties out",
            ],
            [
                [
                    r["store"],
                    r["type"],
                    r["orders"],
                    r["units"],
                    r["merchandise"],
                    r["discounts"],
                    r["tax"],
                    r["shipping"],
                    r["grand_total"],
                    ", ".join(f"{m} {a}" for m, a in r["tenders"].items()),
                    "yes" if r.get("ties_out", True) else "NO",
                ]
                for r in d["rows"]
            ],
            "rows",
            "no sale",
        ),
        "<h2>Missing register transactions</h2>",
        _table(
            ["store", "register", "missing", "count", "where", "after", "before", "explained"],
            [
                [
                    g["store"],
                    g["register"],
                    g["missing"],
                    g["count"],
                    g["where"],
                    _ref(g.get("after")),
                    _ref(g.get("before")),
                    g.get("explained"),
                ]
                for g in d.get("missing_transactions", [])
            ],
            "gaps",
            "no gap in any register's sequence",
        ),
        "<h2>Tax by jurisdiction</h2>",
        _table(
            ["store", "jurisdiction", "type", "rate", "amount"],
            [
                [t["store"], t["jurisdiction"], t["type"], t["rate"], t["amount"]]
                for t in d.get("tax_by_jurisdiction", [])
            ],
            "tax",
        ),
        "<h2>Registers</h2>",
        _table(
            ["store", "register", "orders", "total", "first transaction", "last transaction"],
            [
                [r["store"], r["register"], r["orders"], r["total"], r["first_txn"], r["last_txn"]]
                for r in d.get("registers", [])
            ],
            "registers",
        ),
        "<h2>Rounding</h2>",
        _table(
            ["subject", "what"],
            [[x["subject"], x["text"]] for x in d.get("rounding", [])],
            "rounding",
            "no rounding difference",
        ),
        "<h2>Cancelled sales</h2>",
        _table(
            ["order", "store", "type", "total"],
            [[c["order"], c["store"], c["type"], c["total"]] for c in d.get("cancelled", [])],
            "cancelled",
        ),
    ]
    if d.get("notes"):
        sections.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in d["notes"]) + "</ul>")
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def _ref(ref: dict[str, Any] | None) -> str | None:
    if not ref:
        return None
    order = f", order {ref['order']}" if ref.get("order") else ""
    return f"{ref['txn']} ({ref['file']}, {ref['day']}{order})"
