"""Configuration: settings files, validation, compiled snapshots."""
