"""Policy diff: what an administrator reviews before activating."""

from __future__ import annotations

from ca_service.policy.diff import diff_documents, diff_policies
from ca_service.policy.model import load_policy

A = """
name: t
evidence:
  required: [tdx-quote]
  tdx-quote:
    tcb_status: [UpToDate]
    mrtd: ["{}", "{}"]
    min_tcb_evaluation_data_number: 17
certificate: {{max_lifetime: 24h}}
""".format("aa" * 48, "bb" * 48)


def test_identical_documents_have_no_diff():
    assert diff_policies(load_policy(A), load_policy(A)) == ()


def test_changes_are_listed_by_pointer():
    b = (A.replace('"%s", ' % ("aa" * 48), "").replace("]\n    min", ', "%s"]\n    min' % ("cc" * 48))
         .replace("17", "18").replace("24h", "12h").replace("tcb_status: [UpToDate]", "debug: false"))
    changes = [c.to_json() for c in diff_policies(load_policy(A), load_policy(b))]
    assert {"path": "/certificate/max_lifetime", "op": "changed", "before": "24h", "after": "12h"} in changes
    assert {"path": "/evidence/tdx-quote/mrtd/-", "op": "removed", "before": "aa" * 48} in changes
    assert {"path": "/evidence/tdx-quote/mrtd/-", "op": "added", "after": "cc" * 48} in changes
    assert {"path": "/evidence/tdx-quote/min_tcb_evaluation_data_number", "op": "changed", "before": 17,
            "after": 18} in changes
    assert {"path": "/evidence/tdx-quote/tcb_status", "op": "removed", "before": ["UpToDate"]} in changes
    assert {"path": "/evidence/tdx-quote/debug", "op": "added", "after": False} in changes
    assert len(changes) == 6


def test_pointer_escaping():
    changes = diff_documents({"a/b": 1}, {"a/b": 2})
    assert changes[0].path == "/a~1b"
