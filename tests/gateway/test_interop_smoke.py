from __future__ import annotations


def test_smoke(lab):
    ok, log = lab.charon.initiate("alice")
    print(log)
    print(lab.main.sas())
    print((lab.main.state / "stderr.log").read_text())
    assert ok
