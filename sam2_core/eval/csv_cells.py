"""CSV text that spreadsheets read as data: quoting by the ``csv`` module, no formulas.

Video and object names come from folder names and dataset files, i.e. from whoever made the
data. A name with a comma or a quote would shift the columns of a hand-built line, and a name
starting with ``=``, ``+``, ``-`` or ``@`` is run as a formula when the file is opened in a
spreadsheet (CSV injection). Text cells therefore get a leading single quote in that case, and
every row is written by :class:`csv.writer` (minimal quoting, ``\\n`` line ends), which leaves
plain cells byte for byte as they are (the official ``results.csv`` layout is unchanged).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

#: first characters that make a spreadsheet evaluate a cell (tab and CR: OWASP's list)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def guard_text(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def csv_text(rows: Iterable[Sequence[str]]) -> str:
    """Rows of already formatted cells as CSV text (quoted where needed, ``\\n`` endings).

    Cells are written as given: guard text cells with :func:`guard_text` first (numbers such
    as ``-1.5`` must stay numbers).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()
