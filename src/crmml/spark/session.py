"""The Spark session crmml runs on: a local one (bound to the loopback interface) or the configured one.

``spark-submit`` (or a notebook on a cluster) configures its own session: :func:`spark_session`
with ``master=None`` then joins it. Without one, it starts ``local[2]``: driver and executors in
this process's JVM, bound to 127.0.0.1 only, without the web UI, with quiet logs and the Python
workers on this interpreter (so they import the same crmml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

__all__ = ["DEFAULT_MASTER", "spark_session"]

DEFAULT_MASTER = "local[2]"

#: Settings of every session crmml starts (not of a session it joins).
_BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",  # naive timestamps are UTC, as in crmml.data
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "20000",
    "spark.ui.showConsoleProgress": "false",
}
_LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
#: Local mode: loopback only, no web UI, few shuffle partitions for a machine's cores.
_LOCAL_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
}


def spark_session(master: str | None = None, *, app_name: str = "crmml", conf: dict | None = None,
                  log_level: str = "ERROR") -> SparkSession:
    """The active session, or a new one on ``master``.

    Parameters
    ----------
    master : str, optional
        ``local[N]``, ``spark://...``, ``yarn``, ``k8s://...``. None joins the active session, or one
        configured by ``spark-submit``, and otherwise starts :data:`DEFAULT_MASTER`.
    app_name : str
        The application's name (new sessions only).
    conf : dict, optional
        Extra Spark settings for a new session; they override crmml's.
    log_level : str
        Log level of the JVM side (``"ERROR"``, ``"WARN"``, ``"INFO"``).

    Returns
    -------
    pyspark.sql.SparkSession
    """
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    submitted = master is None and "PYSPARK_GATEWAY_PORT" in os.environ  # started by spark-submit
    chosen = None if submitted else (master or DEFAULT_MASTER)
    settings = dict(_BASE_CONF)
    if chosen is not None and chosen.startswith("local"):
        settings.update(_LOCAL_CONF)
        # the JVM logs errors only from its start (setLogLevel comes later)
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j.configurationFile={_LOG_CONFIG.as_uri()}"
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # read before the conf: no interface lookup
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings.update(conf or {})
    builder = SparkSession.builder.appName(app_name)
    if chosen is not None:
        builder = builder.master(chosen)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(log_level)
    return session
