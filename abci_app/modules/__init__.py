"""Chain modules. Each has the same sections in the same order: Params,
Storage, Events, Errors, Calls, Genesis, Hooks, Queries (see docs/modules.md)."""
