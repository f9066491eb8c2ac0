"""pytest hooks only: options, markers, collection rules, roll-up, exit code."""
