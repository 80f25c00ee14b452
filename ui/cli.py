"""The `policyqa` command line.

Subcommands live next to the layer they drive and are imported only when invoked, so
`policyqa --help` stays fast (gradio and torch take seconds to import).
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command
COMMANDS = {
    "build": "ui.cli_index:build",
    "ask": "ui.cli_qa:ask",
    "chat": "ui.cli_qa:chat",
    "serve": "ui.cli_serve:serve",
    "feedback": "ui.cli_serve:feedback",
    "audit": "ui.cli_audit:audit",
    "add": "ui.cli_kb:add",
    "remove": "ui.cli_kb:remove",
    "list": "ui.cli_kb:list_documents",
    "eval": "eval.cli:eval_command",
    "bench": "eval.cli:bench",
    "cmrc": "eval.cli:cmrc",
    "train-reader": "eval.train_reader:train_reader_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            return None  # command not built yet
        return getattr(module, attribute, None)


@click.group(cls=LazyGroup)
@click.version_option(package_name="policy-qa")
def main() -> None:
    """policy-qa: answers Chinese policy questions by quoting the documents, with citations.

    Examples:

        policyqa build

        policyqa ask "虹桥国际开放枢纽包括哪些区域？"

        policyqa serve --port 8000
    """
