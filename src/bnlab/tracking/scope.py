"""The store, experiment and retry deadline that a `Store` and each of its parts work in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mlflow import MlflowClient

from bnlab.tracking import queries
from bnlab.tracking.retries import retry

T = TypeVar("T")


@dataclass
class Scope:
    """One experiment of one store, and how long each call to it may retry."""

    client: MlflowClient
    uri: str
    experiment: str
    experiment_id: str
    deadline_seconds: float

    def retry(self, action: Callable[[], T]) -> T:
        """Runs one store call, retrying transient errors until this scope's deadline."""
        return retry(action, deadline=self.deadline_seconds)

    def search(self, filter_string: str, order_by: list[str] | None = None) -> list[Any]:
        """Every run of the experiment matching `filter_string`."""
        return queries.search_all(
            self.client, [self.experiment_id], filter_string, order_by, self.deadline_seconds
        )
