"""A receipt as a one-page PDF (fpdf2: pure Python, no system libraries), from the same
``selectors.ReceiptView`` as the receipt's page."""

from __future__ import annotations

import unicodedata

from fpdf import FPDF

from payments import selectors
from payments.models import PaymentReceipt


def _latin1(text: str) -> str:
    """The PDF's built-in Helvetica covers Latin-1 only: accents outside it are dropped
    (``Ñ`` stays, ``Ł`` becomes ``L``), anything else becomes ``?``."""
    out = []
    for char in text:
        try:
            char.encode("latin-1")
            out.append(char)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", char).encode("latin-1", "ignore").decode("latin-1")
            out.append(base or "?")
    return "".join(out)


def receipt_pdf(receipt: PaymentReceipt) -> bytes:
    view = selectors.receipt_by_token(token=receipt.token)
    if view is None:  # pragma: no cover - the receipt was just read by its token
        raise LookupError(receipt.pk)
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"Receipt {view.number}"))
    pdf.set_author(_latin1(view.school_name))
    pdf.set_creation_date(view.receipt.issued_at)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 12, _latin1(view.school_name), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 14)
    pdf.cell(0, 10, _latin1(view.title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    for label, value in view.lines:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(50, 8, _latin1(label))
        pdf.set_font("Helvetica", "", 11)
        pdf.multi_cell(0, 8, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("Helvetica", "I", 9)
    pdf.multi_cell(0, 5, _latin1(f"This receipt can also be viewed at {view.receipt.url}"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
