"""The command line's wiring: every subcommand is listed, each loads its module only when run, and
its options reach the library."""

import importlib
import json
import subprocess
import sys

import pytest

from saliency_jax.app import cli


def _run(code: str) -> dict:
    probe = ("import sys, json\n" + code +
             "\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'saliency_jax'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_help_lists_every_subcommand_without_loading_jax(capsys):
    loaded = _run("from saliency_jax.app import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass")
    assert "jax" not in loaded, loaded
    assert not loaded & {module for module, _ in cli.COMMANDS.values()}, loaded
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for name in ("explain", "demo", "train", "evaluate", "faithfulness", "audit"):
        assert name in text and name in cli.COMMANDS


def test_a_subcommand_loads_only_its_own_module():
    loaded = _run("from saliency_jax.app import cli\ncli.build_parser(['demo', '--n', '2']).parse_args(['demo'])")
    assert "saliency_jax.app.commands.demo" in loaded and "jax" not in loaded, loaded
    assert not loaded & {m for name, (m, _) in cli.COMMANDS.items() if name != "demo"}, loaded


@pytest.mark.parametrize("argv", [
    ["explain", "photos", "--methods", "occlusion,guided", "--window", "48x32", "--fill", "mean"],
    ["demo", "--n", "2", "--out", "somewhere"],
    ["train", "--config", "smoke", "--epochs", "1"],
    ["evaluate", "--n", "7", "--split", "val"],
    ["faithfulness", "--n", "7", "--out", "somewhere"],
    ["audit", "--n", "7", "--out", "somewhere", "--check"],
])
def test_every_subcommand_parses_its_own_options(argv):
    # One convention: the module named in COMMANDS gives the options and the command (func).
    module = importlib.import_module(cli.COMMANDS[argv[0]][0])
    args = cli.build_parser(argv).parse_args(argv)
    own = module.add_arguments(__import__("argparse").ArgumentParser()).parse_args(argv[1:])
    assert args.func is module.cmd
    assert {k: v for k, v in vars(args).items() if k not in ("func", "command")} == \
        {k: v for k, v in vars(own).items() if k != "func"}


def test_a_bad_option_of_a_library_subcommand_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["audit", "--no-such-option"])
    assert exit_.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err
