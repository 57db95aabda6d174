"""litdistill's Hydra configs (``train.yaml`` and one folder per config group).

A package so that Hydra finds them as ``pkg://litdistill.conf`` wherever litdistill is
installed (a wheel, an editable checkout); the yaml files ship as package data.
:func:`compose` is the Python API's way to build a job config from them (the demo, export,
tests), so no caller writes out Hydra's initialize/compose/clear dance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as _compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

# The folder of this package: initialize_config_dir wants a path, @hydra.main the pkg:// form.
CONF_DIR = str(Path(__file__).resolve().parent)


def compose(overrides: Sequence[str] = (), *, return_hydra_config: bool = False
            ) -> DictConfig:
    """``conf/train.yaml`` composed with Hydra ``overrides``, as ``litdistill-train`` would.

    Args:
        overrides: Command-line style overrides (``task=sst2``, ``trainer.max_epochs=1``).
        return_hydra_config: Keep the ``hydra`` node (what a ``--multirun`` job sees).

    Raises:
        hydra.errors.HydraException: An unknown group option or key, or a bad override.
    """
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return _compose("train", overrides=list(overrides),
                            return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()
