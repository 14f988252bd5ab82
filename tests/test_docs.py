"""The documentation stays where a newcomer looks for it, and its links lead somewhere.

Every relative link in README.md and docs/**/*.md points at a file of the repository and, with an
``#anchor``, at a heading of that file; the README stays short and keeps its two commands and its
webhook example byte for byte; no page cites an issue tracker or notes a clone does not have; the
sections the code cites in docs/reference/ exist; every variable of .env.example is documented.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

from tests.conftest import surepay_body

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 200

# The README's "Try it" section, byte for byte: the cURL command and the two answers it shows
# are what every HTTP answer must stay (tests/quickbooks_sync/test_demo_and_admin.py sends the
# same payload).
TRY_IT = r"""## Try it: send a webhook

Right after `make run`, in another terminal:

```bash
BASE_URL="http://localhost:8000"
PROVIDER="SUREPAY"
SCHOOL_CODE="ng"
WEBHOOK_SECRET="sekret"
PAYLOAD='{
  "event_id": "evt-001",
  "external_txn_id": "txn-123",
  "amount": "100,000",
  "currency": "UGX",
  "status": "SUCCEEDED",
  "provider_student_id": "prov-001"
}'
SIG=$(echo -n "$PAYLOAD" | openssl dgst -sha256 -hmac "$WEBHOOK_SECRET" | cut -d" " -f2)
curl -X POST "$BASE_URL/api/webhooks/$PROVIDER" \
  -H "Content-Type: application/json" \
  -H "X-School-Code: $SCHOOL_CODE" \
  -H "X-Signature: $SIG" \
  -d "$PAYLOAD"
```

It answers `202 {"detail": "Webhook accepted", "event_id": "evt-001", "status": "pending"}`.
Send it again: `200 {"detail": "Duplicate webhook ignored", "event_id": "evt-001", "status":
"processed"}`. In the admin (http://localhost:8000/admin/) the payment is there: UGX 100,000,
succeeded, mapped to student STU-0001 (Amina Nakato). Under **QuickBooks Online > Payment syncs**
it is `synced`: a QuickBooks Payment applied to Amina's two open invoices in the demo books."""

TWO_COMMANDS = """```bash
make run    # creates .venv, installs requirements-dev.txt, migrates, loads demo data, serves http://localhost:8000
make test   # the pytest suite against the local PostgreSQL and Redis
```"""

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# A citation of an issue tracker (the word issue, or issues, then a number) or of notes that are
# not in the repository.
FORBIDDEN = [
    re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE),
    re.compile(r"DESIGN\.md"),
    re.compile(r"shared/reference"),
    re.compile(r"shared notes", re.IGNORECASE),
]


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = "".join(char for char in text if char.isalnum() or char in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        found.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match.group(1)))
    return found


def test_every_relative_link_leads_to_a_file_and_a_heading():
    problems = []
    for path in doc_files():
        for number, target in links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            where = f"{path.relative_to(REPO)}:{number}: {target}"
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            try:
                relative = linked.relative_to(REPO).as_posix()
            except ValueError:
                problems.append(f"{where} leaves the repository")
                continue
            if not linked.exists():
                problems.append(f"{where}: no such file")
                continue
            if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where}: no heading with anchor #{anchor} in {relative}")
    assert not problems, "\n".join(problems)


def test_the_link_checker_sees_what_it_must():
    assert slug("Try it: send a webhook") == "try-it-send-a-webhook"
    assert slug("Health, readiness, metrics") == "health-readiness-metrics"
    assert slug("What each provider's events do") == "what-each-providers-events-do"
    assert slug("1.5 Currencies") == "15-currencies"
    assert slug("school-payments — design and contracts") == "school-payments--design-and-contracts"
    assert "webhook-ingestion-contract" in anchors(DOCS / "design.md")
    # A comment in a code block is no heading.
    assert not any(anchor.startswith("optional-kwargs") for anchor in anchors(DOCS / "reference" / "quickbooks.md"))
    assert "docs/index.md" in {target for _, target in links(README)}


def test_the_readme_is_short_and_keeps_its_commands_and_its_webhook_example():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < README_MAX_LINES
    assert TWO_COMMANDS in text
    assert TRY_IT in text


def test_the_readme_webhook_is_the_payload_the_tests_send():
    payload = TRY_IT.split("PAYLOAD='", 1)[1].split("'", 1)[0]
    assert json.loads(payload) == json.loads(surepay_body())


def test_no_page_cites_an_issue_tracker_or_notes_outside_the_repository():
    problems = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in doc_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if any(pattern.search(line) for pattern in FORBIDDEN)
    ]
    assert not problems, "\n".join(problems)


def test_the_readme_and_the_index_lead_to_every_page():
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    from_index = {
        (DOCS / target.partition("#")[0]).resolve().relative_to(DOCS).as_posix()
        for _, target in links(DOCS / "index.md")
        if not target.startswith(("http:", "https:", "../"))
    }
    assert pages - {"index.md"} <= from_index
    from_readme = {target.partition("#")[0] for _, target in links(README)}
    assert {f"docs/{page}" for page in pages} <= from_readme


# --- The sections the code cites ------------------------------------------------------------------

SECTION = re.compile(r"^#{2,3}\s+(\d+(?:\.\d+)?)[.\s]")
EXPLICIT = re.compile(r"reference/(providers|quickbooks)\.md,?\s+(?:§|section\s+)?(\d+(?:\.\d+)?)")
BARE = re.compile(r"§\s?(\d+(?:\.\d+)?)")
CODE_DIRS = (
    "config",
    "core",
    "payments",
    "providers",
    "webhooks",
    "quickbooks_sync",
    "directory_client",
    "ops",
    "fakes",
    "tests",
    "bench",
    "tools",
)


def sections(name: str) -> set[str]:
    path = DOCS / "reference" / f"{name}.md"
    return {match.group(1) for _, line in prose_lines(path) if (match := SECTION.match(line))}


def code_files() -> list[Path]:
    return [
        path for folder in CODE_DIRS for path in sorted((REPO / folder).rglob("*.py")) if "migrations" not in path.parts
    ]


def test_every_reference_section_the_code_cites_exists():
    known = {name: sections(name) for name in ("providers", "quickbooks")}
    assert {"0", "1.5", "3.3", "9", "10"} <= known["providers"]
    assert {"1", "1.3", "2.6", "3", "4.1", "6.7", "8"} <= known["quickbooks"]
    problems = []
    for path in code_files():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(REPO)
        for name, number in EXPLICIT.findall(text):
            if number not in known[name]:
                problems.append(f"{where}: reference/{name}.md {number}")
        # A bare "§2.6" in QuickBooks code is the QuickBooks reference; elsewhere either one.
        about_qbo = "quickbooks" in where.as_posix() or "qbo" in where.as_posix()
        for number in BARE.findall(text):
            allowed = known["quickbooks"] if about_qbo else known["quickbooks"] | known["providers"]
            if number not in allowed:
                problems.append(f"{where}: §{number}")
    assert not problems, "\n".join(problems)


def test_every_environment_variable_is_documented():
    documented = (DOCS / "configuration.md").read_text(encoding="utf-8")
    listed = re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.MULTILINE)
    assert listed
    missing = sorted({name for name in listed if f"`{name}`" not in documented})
    assert not missing, f"in .env.example, not in docs/configuration.md: {missing}"
