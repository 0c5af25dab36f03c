"""Built-in task plugins, one module per task; each registers one factory."""
