"""The lowest room: types and helpers shared by every other room (batch types, typed configuration,
the run directory, vLLM engine settings, the registry helper). Imports no other room of the project."""
