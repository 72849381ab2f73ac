"""Alembic migrations for Herald's tables; `migrate()` brings a database to the newest one."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("herald.producers.migrations")))
    config.attributes["database_url"] = database_url
    return config


def migrate(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
