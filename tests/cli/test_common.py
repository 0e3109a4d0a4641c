"""What the commands share: NAME=VALUE items and option groups declared once."""

from __future__ import annotations

import pytest
from typer.main import get_command

from optiserve.cli import app
from optiserve.cli._common import pairs
from optiserve.errors import UsageError


def test_pairs_strip_and_name_a_bare_item_where_there_is_one_name() -> None:
    assert pairs([" a = x.onnx ", "b=y"], "--model") == {"a": "x.onnx", "b": "y"}
    assert pairs(None, "--model") == {}
    assert pairs(["profiles/cnn"], "--profile", lone="cnn") == {"cnn": "profiles/cnn"}


@pytest.mark.parametrize("item", ["noequals", "=v", "k=", " = "])
def test_a_malformed_pair_is_one_line_naming_the_flag(item: str) -> None:
    with pytest.raises(UsageError, match=r"^--model .*: expected NAME=VALUE$"):
        pairs([item], "--model")
    with pytest.raises(UsageError, match="write NAME=DIR"):
        pairs([item], "--profile", hint="write NAME=DIR")


def test_the_batching_options_read_the_same_wherever_they_appear() -> None:
    commands = get_command(app).commands  # type: ignore[attr-defined]
    helps = {
        name: {p.name: p.help for p in commands[name].params if p.name in ("max_batch", "max_delay_ms", "instances")}
        for name in ("serve", "loadtest", "predict")
    }
    assert helps["serve"] == helps["loadtest"] == helps["predict"] and len(helps["serve"]) == 3
