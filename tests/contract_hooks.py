"""Schemathesis hooks for the contract run (tests/test_contract.py, and the CLI command in
README.md): `SCHEMATHESIS_HOOKS=contract_hooks` with tests/ on PYTHONPATH.

A document filter (`documents` in /api/ask) is schema-valid whatever ids it names, but the
server refuses ids it does not hold (422 unknown_document). The ids change during the run,
as schemathesis deletes documents, so each generated id is replaced by one the server lists
at that moment, before each request. Only string items are replaced: a body that breaks the schema elsewhere (or
with a non-string item) still breaks it.
"""

from __future__ import annotations

import itertools

import httpx
import schemathesis


def _served_ids(base_url: str) -> list[str]:
    response = httpx.get(base_url.rstrip("/") + "/api/documents", timeout=30)
    return [document["doc_id"] for document in response.json()] if response.status_code == 200 else []


@schemathesis.hook
def before_call(context, case, kwargs):
    """Runs before every request of every phase; schemathesis re-checks the edited case
    against the schema, so a still-invalid body is still judged as one."""
    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) != ("POST", "/api/ask"):
        return
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("documents"), list):
        return
    served = _served_ids(operation.schema.get_base_url())
    if not served:
        return
    replacements = itertools.cycle(served)
    body["documents"][:] = [  # in place: schemathesis detects the edit and re-checks the case
        doc_id if not isinstance(doc_id, str) or doc_id in served else next(replacements)
        for doc_id in body["documents"]
    ]
