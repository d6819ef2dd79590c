"""Run a ``crmml`` command on a Spark cluster with ``spark-submit`` in client mode.

``python -m crmml.spark.submit --master spark://host:7077 [options] -- score --model ... --output ...``
builds and runs the ``spark-submit`` command line that works as written:

- **client mode**: the driver runs here, on this interpreter (``spark.pyspark.driver.python`` is
  this Python), so it reads the local model bundle or registry and writes local outputs;
- the executors' Python (``spark.pyspark.python``) is either ``--python PATH``, a Python that exists
  at that path on every worker with crmml installed (a shared or identical install), or
  ``./env/bin/python`` inside ``--archive ENV.tar.gz``, a packed environment (``venv-pack`` or
  ``conda-pack`` of a venv with crmml installed *non-editable*: ``pip install .``; venv-pack refuses
  editable installs such as the one ``make demo`` creates) that Spark unpacks next to each executor.
  In client mode ``spark.pyspark.python`` would also apply to the driver, where ``./env`` does not
  exist ("Cannot run program "./env/bin/python""); setting ``spark.pyspark.driver.python`` too is
  what makes the recipe work;
- with ``--python``, this process's ``PYTHONPATH`` (if set) is passed on to the executors, so they
  import the same crmml sources as the driver;
- ``--engine spark`` is added to ``crmml score`` when missing (the command then joins the
  ``spark-submit`` session).

:func:`submit_command` returns the command without running it (``--dry-run`` prints it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "spark_submit_executable", "submit_command"]

#: The application spark-submit runs: the crmml command line, on the driver.
_ENTRY = "import sys\nfrom crmml.cli import main\nsys.exit(main(sys.argv[1:]))\n"
_ARCHIVE_ALIAS = "env"


def spark_submit_executable() -> str:
    """``$SPARK_HOME/bin/spark-submit``, else ``spark-submit`` on the PATH, else the one pyspark ships."""
    home = os.environ.get("SPARK_HOME")
    if home and (Path(home) / "bin" / "spark-submit").is_file():
        return str(Path(home) / "bin" / "spark-submit")
    found = shutil.which("spark-submit")
    if found:
        return found
    import pyspark

    shipped = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError("No spark-submit: set SPARK_HOME or install pyspark (pip install 'crmml[spark]').")


def submit_command(crmml_args: Sequence[str], *, master: str, entry: str | Path, python: str | None = None,
                   archive: str | None = None, conf: dict[str, str] | None = None,
                   spark_submit: str | None = None) -> list[str]:
    """The ``spark-submit`` command line that runs ``crmml <crmml_args>`` (see the module docstring).

    Parameters
    ----------
    crmml_args : sequence of str
        The crmml command and its options, e.g. ``["score", "--model", ...]``.
    master : str
        ``spark://host:7077``, ``yarn``, ``k8s://...`` or ``local[N]``.
    entry : str or pathlib.Path
        The Python file spark-submit runs (a file holding the crmml entry point).
    python : str, optional
        The executors' Python, present at this path on every worker. Exclusive with ``archive``.
    archive : str, optional
        A packed environment (``.tar.gz``) holding ``bin/python`` with crmml installed.
    conf : dict, optional
        More ``--conf`` settings.
    spark_submit : str, optional
        The spark-submit executable (default :func:`spark_submit_executable`).

    Raises
    ------
    ValueError
        When both or neither of ``python`` and ``archive`` are given, or no crmml command is.
    """
    if (python is None) == (archive is None):
        raise ValueError("Give the executors' Python: either --python PATH or --archive ENV.tar.gz.")
    args = list(crmml_args)
    if not args:
        raise ValueError("Give the crmml command to run after --, e.g. -- score --model ... --output ...")
    if args[0] == "score" and "--engine" not in args:
        args += ["--engine", "spark"]
    settings = {"spark.pyspark.driver.python": sys.executable}
    command = [spark_submit or spark_submit_executable(), "--master", master, "--deploy-mode", "client"]
    if archive is not None:
        command += ["--archives", f"{archive}#{_ARCHIVE_ALIAS}"]
        settings["spark.pyspark.python"] = f"./{_ARCHIVE_ALIAS}/bin/python"
    else:
        settings["spark.pyspark.python"] = python
        if os.environ.get("PYTHONPATH"):
            settings["spark.executorEnv.PYTHONPATH"] = os.environ["PYTHONPATH"]
    settings.update(conf or {})
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, str(entry), *args]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crmml.spark.submit``: run (or print) the spark-submit command; its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    crmml_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, crmml_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m crmml.spark.submit", description=__doc__.splitlines()[0])
    parser.add_argument("--master", required=True, help="spark://host:7077, yarn, k8s://..., local[N]")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--python", help="the executors' Python, at this path on every worker (crmml installed)")
    where.add_argument("--archive", help="a packed environment (venv-pack/conda-pack .tar.gz) with crmml installed")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="more Spark settings")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    args = parser.parse_args(argv)
    conf = {}
    for item in args.conf:
        key, _, value = item.partition("=")
        if not key or not _:
            parser.error(f"--conf takes KEY=VALUE; got {item!r}")
        conf[key] = value
    with tempfile.TemporaryDirectory(prefix="crmml-submit-") as folder:
        entry = Path(folder) / "crmml_main.py"
        entry.write_text(_ENTRY)
        try:
            command = submit_command(crmml_args, master=args.master, entry=entry, python=args.python,
                                     archive=args.archive, conf=conf)
        except (ValueError, FileNotFoundError) as error:
            print(f"crmml.spark.submit: error: {error}", file=sys.stderr)
            return 2
        if args.dry_run:
            print(shlex.join(command))
            return 0
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
