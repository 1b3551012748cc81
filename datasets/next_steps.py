"""What a user can do next with a dataset, added by the apps above (jobs: "Fine-tune on it"): datasets cannot name
their URLs, so they register from their ``AppConfig.ready()``: ``register_action(name, order, make)`` with
``make(request, dataset, place)`` as console/actions.py says. The one place is "page" (the dataset's page)."""

from __future__ import annotations

from console.actions import Actions

dataset_actions = Actions()
register_action = dataset_actions.register
