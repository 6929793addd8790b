"""What people use: the `agent` command and its views of tasks. Frontends import the core
(`agent/` and the layers under it); nothing in the core imports them."""
