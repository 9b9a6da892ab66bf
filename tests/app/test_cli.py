"""The command line's wiring: every subcommand is listed, library subcommands load their module
only when run, and their options reach the library."""

import json
import subprocess
import sys

import pytest

from saliency_jax.app import audit, cli, faithfulness


def _run(code: str) -> dict:
    probe = ("import sys, json\n" + code +
             "\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'saliency_jax'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_help_lists_every_subcommand_without_loading_jax(capsys):
    loaded = _run("from saliency_jax.app import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass")
    assert "jax" not in loaded and "saliency_jax.app.audit" not in loaded, loaded
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for name in ("explain", "demo", "train", "evaluate", "faithfulness", "audit"):
        assert name in text


@pytest.mark.parametrize("module, argv", [
    (faithfulness, ["faithfulness", "--n", "7", "--out", "somewhere"]),
    (audit, ["audit", "--n", "7", "--out", "somewhere", "--check"]),
])
def test_library_subcommands_parse_their_own_options(module, argv):
    # The same options as the module's own parser gives, and the module's command as func.
    args = cli.build_parser(argv).parse_args(argv)
    own = module.add_arguments(__import__("argparse").ArgumentParser()).parse_args(argv[1:])
    assert args.func is module.cmd
    assert {k: v for k, v in vars(args).items() if k not in ("func", "command")} == \
        {k: v for k, v in vars(own).items() if k != "func"}


def test_a_bad_option_of_a_library_subcommand_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["audit", "--no-such-option"])
    assert exit_.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err
