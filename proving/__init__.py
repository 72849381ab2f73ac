"""The proving tools: demo, benchmarks, chaos, provider simulators. Nothing in production imports
them; the `herald` CLI finds their commands through the `herald.commands` entry point."""
