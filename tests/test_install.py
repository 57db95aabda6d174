"""litdistill as users install it: a wheel, run from any folder, with their own config folder.

The configs ship inside the package and Hydra finds them as ``pkg://litdistill.conf``; a
user's folder (``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]``) adds tasks,
students and experiments next to them (``examples/user_conf``). The slow tests build the
wheel from a copy of the sources and install it, without its dependencies, into a fresh venv
that reuses this environment's packages through a ``.pth`` file (no network, no torch
download); every command then runs from a folder outside the repository.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from litdistill.checks import check_config_dirs, check_group_options
from litdistill.conf import CONF_DIR
from litdistill.errors import ConfigError
from litdistill.train import train
from test_slow import CLI_BASE, _env

REPO = Path(__file__).resolve().parents[1]
USER_CONF = REPO / "examples" / "user_conf"
TINY = ["teacher=tiny", "student=tiny", "distill=kd", "trainer.max_epochs=1",
        "data.max_train_samples=32", "data.max_eval_samples=16", "data.batch_size=8"]


# ------------------------------------------------------------------ user config folders (fast)
def test_a_user_config_folder_adds_its_task_student_and_experiment(make_cfg):
    """``examples/user_conf``: its experiment picks its own task (a CSV it ships) and student."""
    data = USER_CONF / "data"
    cfg = make_cfg(f"hydra.searchpath=[file://{USER_CONF}]", "experiment=reviews_kd",
                   f"task.data_files.train={data / 'train.csv'}",
                   f"task.data_files.validation={data / 'dev.csv'}")
    assert (cfg.task.dataset_name, cfg.student.num_layers, cfg.student.hidden) == ("reviews", 3, 64)
    assert cfg.task.label_field == "sentiment"  # the shipped task/custom, extended
    results = train(cfg)
    assert results["status"] == "ok"
    assert results["student"]["name"] == "bert-3x64"
    assert results["metric_names"] == ["accuracy"]


@pytest.mark.parametrize("args, message", [
    (["--config-dir", "{missing}"], "--config-dir {missing}: no such folder"),
    (["-cd={missing}", "task=rte"], "--config-dir {missing}: no such folder"),
    (["hydra.searchpath=[file://{missing}]"], "hydra.searchpath entry file://{missing}: no such"),
    (["+hydra.searchpath=[{missing}]"], "hydra.searchpath entry {missing}: no such folder"),
    (["hydra.searchpath=[pkg://no_such_module.conf]"],
     "hydra.searchpath entry pkg://no_such_module.conf: no such module"),
])
def test_a_missing_config_folder_is_named(args, message, tmp_path):
    """Hydra only warns about a missing search-path entry; we stop before composing."""
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="^" + re.escape(message.format(missing=missing))):
        check_config_dirs([a.format(missing=missing) for a in args])


def test_existing_config_folders_and_hydra_flags_pass(tmp_path):
    """Hydra's own flags read as Hydra reads them (``-c job`` is ``--cfg``, not ``-cd``)."""
    check_config_dirs(["-c", "job", "-cd", str(tmp_path), "--multirun", "seed=1,2",
                       f"hydra.searchpath=[file://{USER_CONF},pkg://litdistill.conf]"])


def test_cli_missing_config_dir_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "litdistill.train", "--config-dir",
                           str(tmp_path / "nope"), "experiment=reviews_kd"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --config-dir {tmp_path / 'nope'}: no such folder"]


# ------------------------------------------------------------------ the wheel (slow)
def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, tiny_glue: Path) -> dict[str, Path]:
    """A venv holding the litdistill wheel (built from a copy of the sources) and nothing
    else; this environment's site-packages serve its dependencies through a ``.pth`` file.

    A ``.pth`` line only adds a folder to ``sys.path`` (``.pth`` files in it are not run),
    so the editable install's path to ``src/`` stays out and the wheel is what imports.
    """
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: the build writes build/ and *.egg-info beside it
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(root / "dist"), str(source)], cwd=root)
    wheel = next((root / "dist").glob("litdistill-*.whl"))

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], cwd=root)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                    "['purelib'])"], cwd=root).stdout.strip()
    here = [p for p in sys.path if p.endswith("site-packages")]
    (Path(purelib) / "zz_dependencies.pth").write_text("\n".join(here) + "\n")

    elsewhere = root / "elsewhere"  # not the repository: no conf/ next to the cwd
    elsewhere.mkdir()
    env = dict(_env(), PATH=f"{venv / 'bin'}:{_env()['PATH']}", GLUE_DIR=str(tiny_glue),
               LITDISTILL_HOME=str(root / "home"))
    for key in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(key, None)
    return {"wheel": wheel, "venv": venv, "python": python, "purelib": Path(purelib),
            "cwd": elsewhere, "env": env}


@pytest.mark.slow
def test_the_wheel_ships_every_config(installed):
    ours = {p.relative_to(CONF_DIR).as_posix() for p in Path(CONF_DIR).rglob("*.yaml")}
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        shipped = {n.removeprefix("litdistill/conf/") for n in wheel.namelist()
                   if n.startswith("litdistill/conf/") and n.endswith(".yaml")}
    assert "train.yaml" in ours and shipped == ours


@pytest.mark.slow
def test_the_installed_package_is_what_runs(installed):
    code = "import litdistill, litdistill.train as t; print(litdistill.__file__); print(t.CONF_DIR)"
    out = _run([str(installed["python"]), "-c", code], installed["cwd"],
               installed["env"]).stdout.split()
    assert [Path(p).is_relative_to(installed["purelib"]) for p in out] == [True, True], out
    info = _run([str(installed["venv"] / "bin" / "litdistill-train"), "--info", "searchpath"],
                installed["cwd"], installed["env"]).stdout
    assert "pkg://litdistill.conf" in info


@pytest.mark.slow
def test_installed_cli_composes_and_trains_from_any_folder(installed):
    cli = str(installed["venv"] / "bin" / "litdistill-train")
    job = yaml.safe_load(_run([cli, "--cfg", "job"], installed["cwd"], installed["env"]).stdout)
    assert job["task"]["name"] == "sst2" and job["student"]["name"] == "tiny-student"

    run = installed["cwd"] / "tiny"
    _run([cli, *CLI_BASE, *TINY, f"hydra.run.dir={run}"], installed["cwd"], installed["env"])
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok" and results["global_step"] == 4
    sources = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())
    main = [s for s in sources["hydra"]["runtime"]["config_sources"] if s["provider"] == "main"]
    assert main == [{"path": "litdistill.conf", "schema": "pkg", "provider": "main"}]


@pytest.mark.slow
def test_installed_cli_runs_a_user_config_folder(installed):
    """The example folder copied into a project of the user's, run from that project."""
    project = installed["cwd"] / "project"
    shutil.copytree(USER_CONF, project / "examples" / "user_conf")
    run = project / "run"
    _run([str(installed["venv"] / "bin" / "litdistill-train"), "--config-dir",
          "examples/user_conf", "experiment=reviews_kd", "trainer.max_epochs=1", *CLI_BASE,
          f"hydra.run.dir={run}"], project, installed["env"])
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok" and results["student"]["name"] == "bert-3x64"
    assert results["choices"]["task"] == "reviews"


@pytest.mark.parametrize("args, message", [
    (["transfer=web"], "transfer=web: no such option; transfer options: files, none, train_rest"),
    (["--multirun", "distill=none,kdd"], "distill=kdd: no such option; distill options: "),
    (["augment=bogus", "seed=1"], "augment=bogus: no such option"),
])
def test_an_unknown_group_option_is_named(args, message):
    """Hydra reports it in several lines with exit code 1; we name the options first."""
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_group_options(args)


def test_known_options_plain_keys_and_user_groups_pass():
    check_group_options(["--multirun", "-cd", str(USER_CONF), "transfer=train_rest",
                         "distill=none,kd", "seed=1,2", "teacher.name_or_path=x/y",
                         "hydra/launcher=parallel", "~callbacks.progress_bar",
                         "+experiment=glue_transfer", "task=reviews", "student=reviews_bert"])


def test_cli_unknown_group_option_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "litdistill.train", "transfer=web"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: transfer=web: no such option; transfer options: files, none, train_rest"]
