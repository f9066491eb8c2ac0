"""How the report shows a recorded value: records as tables, anything else as JSON, always
escaped."""

from __future__ import annotations

from opsready.evidence import ValueItem
from opsready.report.html import _evidence


def test_a_list_of_flat_records_is_a_table() -> None:
    page = _evidence([ValueItem(name="preflights", value=[
        {"origin": "https://a.example", "status": 204, "acao": "https://a.example"},
        {"origin": "https://b.example", "status": 204, "credentials": True},
    ])])
    assert "<th>origin</th><th>status</th><th>acao</th><th>credentials</th>" in page
    assert "<td>https://b.example</td><td>204</td><td>unknown</td><td>yes</td>" in page
    assert "<pre>" not in page


def test_a_flat_mapping_is_a_key_value_table() -> None:
    page = _evidence([ValueItem(name="headers", value={"Strict-Transport-Security": "max-age=63072000"})])
    assert "<th>key</th><th>value</th>" in page
    assert "<td>Strict-Transport-Security</td><td>max-age=63072000</td>" in page


def test_nested_values_and_text_stay_json_or_text() -> None:
    nested = _evidence([ValueItem(name="rule", value={"groups": [{"name": "relay", "rules": []}]})])
    assert "<pre>{\n  &quot;groups&quot;" in nested
    assert "<table>" not in nested
    assert "<pre>plain words</pre>" in _evidence([ValueItem(name="note", value="plain words")])
    assert "<pre>[]</pre>" in _evidence([ValueItem(name="none", value=[])])


def test_hostile_text_in_a_table_is_escaped() -> None:
    page = _evidence([ValueItem(name="x", value=[{"<script>": "<img src=x onerror=alert(1)>"}]),
                      ValueItem(name="y", value={"k": "</td><script>alert(2)</script>"})])
    assert "<script>" not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
