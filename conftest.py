# Marks the repository root for pytest. The opsready plugin is loaded through its entry point.
