"""`wvla-gym` subcommands; the only part of the core that may import `agents` and `envs`."""
