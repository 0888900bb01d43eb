"""Repository-wide pytest settings only; fixtures live in the nova_ws plugin."""
