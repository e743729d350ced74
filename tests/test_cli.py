"""The command line and the package import: light start-up, registration on demand, help texts, arguments files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sevnet_hf
from sevnet_hf import cli

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["demo"],
    ["train"],
    ["crossval"],
    ["ablate"],
    ["zeroshot"],
    ["detect"],
    ["push"],
    *[["prepare", name] for name in cli.PREPARERS],
]
# Every command builds its --help without torch (detect's from inference/arguments.py: detect.py imports torch).
LIGHT_COMMANDS = COMMANDS


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh interpreter that imports this checkout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def help_text(capsys, argv: list[str]) -> str:
    """What ``sevnet-hf ARGV --help`` prints; it must succeed (argparse's help exits with status 0)."""
    try:
        status = cli.main([*argv, "--help"])
    except SystemExit as exit_info:
        status = exit_info.code
    assert status in (0, None)
    return capsys.readouterr().out


def option_helps(text: str) -> dict[str, str]:
    """``--option`` -> its help text, read from argparse's formatted --help output."""
    helps: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        entry = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if entry:
            current = [entry.group(2) or ""]
            for option in re.findall(r"--[\w-]+", entry.group(1)):
                helps[option] = current
        elif current is not None and re.match(r"^\s{3,}\S", line):
            current.append(line.strip())
        else:
            current = None
    return {option: " ".join(part for part in parts if part) for option, parts in helps.items()}


# -- import sevnet_hf: light, and the auto classes still know SEV-Net ---------------------------------------------------


def test_import_is_light_and_the_auto_classes_still_know_sevnet_and_the_baselines(tiny_model_dir):
    result = run_python(
        """
import sys
import sevnet_hf
light = sorted(name for name in ("torch", "transformers", "timm", "torchvision") if name in sys.modules)
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification
folder = sys.argv[1]
print(light)
print(type(AutoConfig.for_model("sevnet")).__name__, type(AutoConfig.for_model("au_mlgcn")).__name__)
print(type(AutoModelForImageClassification.from_pretrained(folder)).__name__)
print(type(AutoModel.from_pretrained(folder)).__module__)
print(type(AutoImageProcessor.from_pretrained(folder)).__name__)
""",
        str(tiny_model_dir),
    )
    light, configs, task_model, bare_model_module, processor = result.stdout.split("\n")[:5]
    assert light == "[]"  # no torch, transformers, timm or torchvision
    assert configs == "SEVNetConfig AUMLGCNConfig"
    assert task_model == "SEVNetForAUDetection"
    assert bare_model_module.startswith("sevnet_hf.")
    assert processor == "SEVNetImageProcessor"


@pytest.mark.parametrize(
    "first",
    [
        "from sevnet_hf import SEVNetForAUDetection",  # modeling_sevnet imports transformers.AutoModel half-way
        "from transformers import AutoModel, AutoImageProcessor; import sevnet_hf",  # transformers before us
        "import sevnet_hf.training.loop",  # a command module that imports everything
        "import sevnet_hf; from transformers import pipeline",  # transformers.pipelines half-imported meanwhile
    ],
)
def test_registration_works_whatever_is_imported_first(first, tmp_path):
    result = run_python(
        f"""
import json, sys, warnings
warnings.simplefilter("error")  # a registration that failed would warn
{first}
import sevnet_hf
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
assert type(AutoConfig.for_model("sevnet")) is sevnet_hf.SEVNetConfig
assert type(AutoConfig.for_model("au_mscam")) is sevnet_hf.AUMSCAMConfig
mapping = AutoModelForImageClassification._model_mapping
assert mapping[sevnet_hf.SEVNetConfig] is sevnet_hf.SEVNetForAUDetection
assert mapping[sevnet_hf.AUResNetConfig] is sevnet_hf.AUResNetForAUDetection
assert IMAGE_PROCESSOR_MAPPING[sevnet_hf.SEVNetConfig]["pil"] is sevnet_hf.SEVNetImageProcessor
sevnet_hf.SEVNetConfig(aus=[1, 2]).save_pretrained(sys.argv[1])
print(json.load(open(sys.argv[1] + "/config.json"))["auto_map"])
""",
        str(tmp_path),
    )
    assert "'AutoConfig': 'configuration_sevnet.SEVNetConfig'" in result.stdout  # saved for trust_remote_code


def test_every_public_name_resolves():
    assert set(sevnet_hf.__all__) == set(sevnet_hf._EXPORTS)
    for name in sevnet_hf.__all__:
        assert getattr(sevnet_hf, name) is not None
    assert sevnet_hf.configuration_sevnet.SEVNetConfig is sevnet_hf.SEVNetConfig  # submodules as attributes
    with pytest.raises(AttributeError, match="no_such_name"):
        sevnet_hf.no_such_name  # noqa: B018


def test_help_of_the_tool_and_of_every_command_imports_no_torch():
    result = run_python(
        """
import contextlib, io, sys
from sevnet_hf.cli import main
seen = []
for argv in [["--help"], *[a.split() for a in sys.argv[1:]]]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main([*argv, "--help"] if argv != ["--help"] else argv)
        except SystemExit:
            pass
    seen.append(f"{' '.join(argv)}: torch={'torch' in sys.modules}")
print("\\n".join(seen))
""",
        *[" ".join(command) for command in LIGHT_COMMANDS],
    )
    assert "torch=True" not in result.stdout, result.stdout
    assert result.stdout.count("torch=False") == len(LIGHT_COMMANDS) + 1


# -- --help texts -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_names_the_command_shows_defaults_once_and_explains_no_flags(command, capsys):
    text = help_text(capsys, command)
    assert text.startswith(f"usage: sevnet-hf {' '.join(command)} "), text[:200]
    helps = option_helps(text)
    assert "--help" in helps and len(helps) > 3
    for option, help_ in helps.items():
        assert help_.count("(default") <= 1, f"{option}: {help_}"
        assert "(default: None)" not in help_, f"{option}: {help_}"
        if option.startswith("--no_"):
            positive = "--" + option[len("--no_") :]
            assert help_ != helps[positive] and positive in help_, f"{option}: {help_}"


def test_a_default_written_in_the_help_is_not_repeated(capsys):
    helps = option_helps(help_text(capsys, ["demo"]))
    assert helps["--photo"] == "Photo to run the detector on (default: astronaut)."
    assert helps["--no_progress"] == "Turn off --progress (the same as --progress false)."
    assert helps["--seed"].endswith("(default: 0)")


def test_train_help_from_the_light_module_is_the_help_train_itself_prints(capsys):
    from sevnet_hf.training.loop import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    from_loop = capsys.readouterr().out
    assert help_text(capsys, ["train"]) == from_loop


def test_tool_help_and_prepare_help(capsys):
    assert cli.main(["--help"]) == 0 and "sevnet-hf prepare" in capsys.readouterr().out
    assert cli.main(["prepare", "--help"]) == 0 and "bp4d|disfa" in capsys.readouterr().out
    assert cli.main(["prepare"]) == 2 and "usage: sevnet-hf prepare" in capsys.readouterr().err
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err


# -- arguments files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unknown_key_in_an_arguments_file_is_one_line_and_exit_status_2(command, tmp_path, capsys):
    path = tmp_path / "args.yaml"
    path.write_text("epochz: 3\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"sevnet-hf {' '.join(command)}: error: {path}: unknown argument(s) epochz")
    assert "--help" in err


def test_bad_arguments_files_are_one_line_naming_the_file_and_line(tmp_path, capsys):
    from sevnet_hf.training.loop import parse_args

    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: d\nepochs: [3\n")
    cases = {
        broken: r"broken\.yaml, line \d: not valid YAML",
        tmp_path / "missing.yaml": r"arguments file .*missing\.yaml does not exist",
        tmp_path / "list.json": r"list\.json must hold a mapping",
        tmp_path / "typo.json": r"typo\.json: unknown argument\(s\) epoch \(did you mean epochs\?\)",
    }
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "typo.json").write_text('{"dataset": "d", "epoch": 3}')
    for path, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            parse_args([str(path)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and re.search(message, err), err


def test_a_detect_arguments_file_fills_list_options_and_flags_after_it_override_it(tmp_path):
    from sevnet_hf.inference.detect import parse_detect_args

    path = tmp_path / "detect.yaml"
    path.write_text("model: m\ninputs: [a.png, b.mp4]\nevery: 5\nprogress: false\n")
    args = parse_detect_args([str(path), "--every", "2"])
    assert args.inputs == ["a.png", "b.mp4"] and args.model == "m" and args.every == 2 and args.progress is False


def test_prepare_reads_an_arguments_file_too(tmp_path):
    from sevnet_hf.datasets_scripts.common import parse_args
    from sevnet_hf.datasets_scripts.synthetic import PrepareSyntheticArguments

    path = tmp_path / "synthetic.json"
    path.write_text(json.dumps({"output": "o", "seed": 3}))
    args = parse_args(PrepareSyntheticArguments, [str(path), "--seed", "4"])
    assert args.output == "o" and args.seed == 4
