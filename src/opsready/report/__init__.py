"""Report writers: one readiness model becomes readiness.json, index.html, junit.xml,
readiness.prom, MANIFEST.sha256, reports/history.jsonl and reports/latest."""
