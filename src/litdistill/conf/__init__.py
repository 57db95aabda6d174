"""litdistill's Hydra configs (``train.yaml`` and one folder per config group).

A package so that Hydra finds them as ``pkg://litdistill.conf`` wherever litdistill is
installed (a wheel, an editable checkout); the yaml files ship as package data.
"""
