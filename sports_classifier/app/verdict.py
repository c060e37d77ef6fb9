"""What the Predict tab says about one photo: one headline for all the models, and a small panel
per model beneath it.

One headline, because the models answer one question: when no model is confident (each one's
top probability is under its out-of-distribution threshold) the page says "Probably not a
sport" once, with the guesses greyed, instead of a bold sport name in every panel. Everything
here is plain HTML from the predictions (names escaped); nothing imports Gradio.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Sequence

from .predict import ModelResult, ms_text, percent_pair
from .sport_names import display_name

SHOWN_ROWS = 3  # a panel lists at most this many classes...
MIN_SHOWN = 0.01  # ...and only those above 1% (the top one always)
NOT_A_SPORT = "Probably not a sport"


def unsure_note(result: ModelResult) -> str:
    """Why a model is not confident, in numbers."""
    top, threshold = percent_pair(result.top[1], result.threshold)
    return f"top {top}, under this model's {threshold} threshold"


def _confident(result: ModelResult) -> bool:
    # a model without a recorded threshold cannot say it is unsure: its answer counts
    return not result.error and bool(result.confidences) and result.out_of_distribution is not True


def headline(results: Sequence[ModelResult]) -> dict | None:
    """The one verdict: ``{"kind": "sport"|"not-a-sport", "title", "label", "detail"}``; None when no model
    answered (the panels then show why)."""
    answered = [r for r in results if not r.error and r.confidences]
    if not answered:
        return None
    confident = [r for r in answered if _confident(r)]
    if not confident:
        best: dict[str, float] = {}
        for r in answered:  # each guessed sport once, at its highest probability
            best[r.top[0]] = max(best.get(r.top[0], 0.0), r.top[1])
        guesses = ", ".join(f"{display_name(k)} {v:.0%}" for k, v in sorted(best.items(), key=lambda kv: -kv[1]))
        who = "the model is" if len(answered) == 1 else f"none of the {len(answered)} models is"
        return {"kind": "not-a-sport", "title": NOT_A_SPORT, "label": None,
                "detail": f"{who} confident; best guess{'es' if len(best) > 1 else ''}: {guesses}"}
    votes = Counter(r.top[0] for r in confident)
    label, count = max(votes.items(), key=lambda kv: (kv[1], max(r.top[1] for r in confident if r.top[0] == kv[0])))
    best = max(r.top[1] for r in confident if r.top[0] == label)
    if len(answered) == 1:
        detail = f"{best:.0%} sure"
    elif count == len(answered):
        low = min(r.top[1] for r in confident)
        detail = f"all {count} models agree ({low:.0%}–{best:.0%})" if f"{low:.0%}" != f"{best:.0%}" else \
            f"all {count} models agree ({best:.0%})"
    else:
        others = [f"{r.name}: {display_name(r.top[0])}" for r in confident if r.top[0] != label]
        unsure = len(answered) - len(confident)
        detail = f"{count} of {len(answered)} models ({best:.0%})"
        detail += "".join(f"; {o}" for o in others) + (f"; {unsure} not confident" if unsure else "")
    return {"kind": "sport", "title": display_name(label), "label": label, "detail": detail}


def top_label(results: Sequence[ModelResult]) -> str | None:
    """The sport the headline names (its dataset label), None when it names none."""
    found = headline(results)
    return found["label"] if found else None


def verdict_html(results: Sequence[ModelResult]) -> str:
    """The headline as HTML (empty when there is none)."""
    found = headline(results)
    if found is None:
        return ""
    return (f'<div class="verdict verdict-{found["kind"]}" role="status">'
            f'<div class="verdict-title">{html.escape(found["title"])}</div>'
            f'<div class="verdict-detail">{html.escape(found["detail"])}</div></div>')


def shown_rows(confidences: dict[str, float], *, rows: int = SHOWN_ROWS, floor: float = MIN_SHOWN):
    """The classes a panel lists: the top ``rows``, without those at or under ``floor`` (the top
    one always shows)."""
    ranked = sorted(confidences.items(), key=lambda kv: -kv[1])[:rows]
    return [kv for i, kv in enumerate(ranked) if i == 0 or kv[1] > floor]


def panel_html(result: ModelResult) -> str:
    """One model's panel: its name, its top classes as bars, the time it took (greyed when the
    model is not confident)."""
    name = html.escape(result.name)
    if result.error:
        return (f'<div class="panel panel-error"><div class="panel-name">{name}</div>'
                f'<div class="panel-note">{html.escape(result.error)}</div></div>')
    unsure = result.out_of_distribution is True
    lines = []
    for label, prob in shown_rows(result.confidences):
        shown = html.escape(display_name(label))
        lines.append(f'<div class="panel-row" title="{html.escape(label)} {prob:.1%}">'
                     f'<span class="panel-label">{shown}</span><span class="panel-pct">{prob:.0%}</span>'
                     f'<span class="panel-bar" style="width:{max(prob, 0.01) * 100:.0f}%"></span></div>')
    notes = []
    if result.seconds is not None:
        notes.append(f"answered in {ms_text(result.seconds)}")
    if unsure:
        notes.append(html.escape(unsure_note(result)))
    elif result.out_of_distribution is None:
        notes.append("no confidence threshold recorded")
    return (f'<div class="panel{" panel-unsure" if unsure else ""}"><div class="panel-name">{name}</div>'
            + "".join(lines) + f'<div class="panel-note">{" · ".join(notes)}</div></div>')


def panels_html(results: Sequence[ModelResult]) -> str:
    """Every model's panel, side by side where there is room."""
    if not results:
        return ""
    return '<div class="panels">' + "".join(panel_html(r) for r in results) + "</div>"


CSS = """
.verdict {padding: 10px 14px; border-radius: 8px; background: var(--background-fill-secondary);}
.verdict-title {font-size: 1.6em; font-weight: 700; line-height: 1.2}
.verdict-detail {color: var(--body-text-color-subdued); font-size: 0.95em}
.verdict-not-a-sport .verdict-title {color: var(--body-text-color-subdued)}
.panels {display: flex; flex-wrap: wrap; gap: 8px}
.panel {flex: 1 1 200px; min-width: 0; padding: 8px 10px; border: 1px solid var(--border-color-primary);
        border-radius: 8px}
.panel-name {font-weight: 600; font-size: 0.9em; margin-bottom: 4px; white-space: nowrap; overflow: hidden;
             text-overflow: ellipsis}
.panel-row {position: relative; display: flex; justify-content: space-between; gap: 8px; padding: 2px 4px}
.panel-label {white-space: nowrap; overflow: hidden; text-overflow: ellipsis; position: relative; z-index: 1}
.panel-pct {font-variant-numeric: tabular-nums; position: relative; z-index: 1}
.panel-bar {position: absolute; left: 0; top: 0; bottom: 0; background: var(--color-accent-soft); border-radius: 4px}
.panel-note {color: var(--body-text-color-subdued); font-size: 0.8em; margin-top: 4px}
.panel-unsure .panel-row, .panel-unsure .panel-name {opacity: 0.55}
.panel-error .panel-note {color: var(--error-text-color)}
"""
