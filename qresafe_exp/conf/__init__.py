"""The Hydra config tree, shipped inside the package so that an installed wheel finds it.

Every app names it as ``CONFIG_PATH`` (Hydra's ``pkg://`` search path, which needs this ``__init__.py``);
code that composes outside an app, or lists the groups, reads the directory ``CONF_DIR``.
"""

from pathlib import Path

CONFIG_PATH = "pkg://qresafe_exp.conf"
CONF_DIR = Path(__file__).resolve().parent
