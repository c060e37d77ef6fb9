"""Names a person reads for the dataset's class labels.

A few of the dataset's folder names are misspelt. The models, their configs, the API and the
CSVs keep those labels exactly (they are the classes the models were trained on); only the
text on the page uses these display names.
"""

from __future__ import annotations

DISPLAY_NAMES = {
    "ampute football": "amputee football",
    "barell racing": "barrel racing",
    "canoe slamon": "canoe slalom",
}


def display_name(label: str) -> str:
    """``label`` as the page shows it (the label itself unless it is a known misspelling)."""
    return DISPLAY_NAMES.get(label, label)


def matches(label: str, query: str) -> bool:
    """Whether a search text finds ``label`` (by its label or its display name)."""
    query = query.strip().lower()
    return not query or query in label.lower() or query in display_name(label).lower()


def best_match(labels: list[str], query: str) -> str | None:
    """The label a search for ``query`` means when Enter is pressed: an exact name first, then
    a name that starts with it, then one with a word that starts with it, then any that holds
    it ("rowing" is rowing, not axe throwing)."""
    query = " ".join(query.strip().lower().split())
    if not query:
        return None
    names = [(label, display_name(label).lower(), label.lower()) for label in labels]
    tests = (lambda n: query == n, lambda n: n.startswith(query),
             lambda n: any(w.startswith(query) for w in n.split()), lambda n: query in n)
    for test in tests:
        for label, shown, raw in names:
            if test(shown) or test(raw):
                return label
    return None
