"""The API keeps its own contract: schemathesis, every check, against a real server.

The server answers from a throwaway copy of the seed corpus and its index, with the admin
key set, so the uploads, supersessions and deletes schemathesis sends change real files
and trigger real rebuilds. One bearer key opens both the admin and the /v1 routes, since
the run sends one Authorization header. The bots are configured, as in production. Rate
limits are off: schemathesis sends hundreds of requests from one address.

The run is the CLI's, with all its phases (examples, coverage, fuzzing, stateful), a fixed
seed and few examples per operation; tests/schemathesis.toml lists the few refusals of
schema-valid input the schema cannot describe, and tests/contract_hooks.py keeps document
filters to documents the server holds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import copy_seed_corpus

from corpus.settings import PROJECT_ROOT

KEY = "contract-test-key-0123456789abcdef"
TESTS = Path(__file__).parent
SEED = "15"
MAX_EXAMPLES = "5"


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory, seed_index_dir):
    from qa import Assistant
    from ui.app import create_app
    from ui.server import BackgroundServer, free_port

    work = tmp_path_factory.mktemp("contract")
    settings = copy_seed_corpus(
        work, cache_dir=PROJECT_ROOT / "var" / "cache", port=free_port(),
        admin_api_key=KEY, openai_api_key=KEY,
        wechat_token="contract-wechat", wecom_token="contract-wecom",
        wecom_corp_id="ww0123456789abcdef", wecom_aes_key="a" * 43,
        rate_limit_per_s=0, bot_rate_limit_per_s=0,
    )
    shutil.copytree(seed_index_dir, settings.index.index_dir)  # the same documents: no rebuild
    app = create_app(settings, assistant=Assistant.load(settings))
    with BackgroundServer(app, settings.service.port) as server:
        yield server.url, settings


def run_schemathesis(base_url: str, report_dir: Path) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(TESTS / "schemathesis.toml"),
        "run", f"{base_url}/openapi.json",
        "--checks", "all",
        "-H", f"Authorization: Bearer {KEY}",
        "--seed", SEED,
        "--max-examples", MAX_EXAMPLES,
        "--workers", "1",  # the hooks read the documents the server holds now
        "--request-timeout", "60",
        "--generation-database", "none",
        "--no-color",
        "--report", "json", "--report-dir", str(report_dir),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "contract_hooks",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    # Run in the report folder: schemathesis keeps a cache in its working directory.
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=540,
                          cwd=report_dir.parent)


def test_every_operation_keeps_the_contract(contract_server, tmp_path):
    base_url, settings = contract_server
    documents_before = httpx.get(base_url + "/api/documents").json()
    result = run_schemathesis(base_url, tmp_path / "report")
    summary = result.stdout[-3000:]
    print(summary)
    cases = re.search(r"(\d+) generated", result.stdout)
    assert cases and int(cases.group(1)) > 200, summary
    assert result.returncode == 0, summary
    assert re.search(r"Tested: 18", result.stdout), summary
    # Deletes were real: the throwaway corpus lost documents, the bundled one kept them.
    assert len(list(settings.corpus.corpus_dir.glob(".removed/*"))) >= 1 or len(
        httpx.get(base_url + "/api/documents").json()) < len(documents_before)
