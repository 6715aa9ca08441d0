"""pytest fixtures over tests/support/stack.py. Use them from a conftest.py or a test module:

from tests.support.fixtures import airflow_template_db, stack_factory  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import db as dbs
from tests.support.procs import start
from tests.support.stack import Stack, start_stack


@pytest.fixture(scope="session")
def airflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Airflow metadata database migrated once by `airflow/entrypoint.sh init`; pass it as
    `airflow_template_db=` to clone it per test instead of migrating again."""
    name = dbs.unique_name("airflow_tpl")
    url = dbs.create_db(name).replace("postgresql://", "postgresql+psycopg2://", 1)
    home = tmp_path_factory.mktemp("airflow-template")
    try:
        init = start(
            "airflow-template-init",
            ["bash", "airflow/entrypoint.sh", "init"],
            {"AIRFLOW_HOME": str(home), "AIRFLOW_DATABASE_URL": url, "AIRFLOW_JWT_SECRET": "t" * 64},
            home / "logs",
        )
        assert init.popen.wait(300) == 0, init.log()
        yield name
    finally:
        dbs.drop_db(name)


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """`stack_factory(**start_stack_kwargs)` starts services under tmp_path; all are stopped
    (and their databases dropped) when the test ends."""
    started: list[Stack] = []

    def make(**kwargs) -> Stack:
        stack = start_stack(tmp_path / f"stack{len(started)}", **kwargs)
        started.append(stack)
        return stack

    yield make
    for stack in reversed(started):
        stack.stop()
