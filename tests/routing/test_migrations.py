"""Migrations that map existing data: what a route that existed before an upgrade becomes."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("routing", "0015_deployment_discovered_windows")
AFTER = ("routing", "0016_route_continue_streams_choice")


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


@pytest.mark.django_db(transaction=True)
def test_continue_streams_opted_in_becomes_on_and_the_old_default_becomes_auto():
    old = migrate(BEFORE)
    Route = old.get_model("routing", "Route")
    Route.objects.create(name="opted-in", continue_streams=True)
    Route.objects.create(name="left-alone", continue_streams=False)

    new = migrate(AFTER)
    Route = new.get_model("routing", "Route")
    assert dict(Route.objects.values_list("name", "continue_streams")) == {"opted-in": "on", "left-alone": "auto"}

    Route = migrate(BEFORE).get_model("routing", "Route")  # and back: only "on" was an opt-in
    assert dict(Route.objects.values_list("name", "continue_streams")) == {"opted-in": True, "left-alone": False}
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # the schema the other tests expect
