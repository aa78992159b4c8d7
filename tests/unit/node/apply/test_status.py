"""node/apply/status.py: exit codes and summaries."""


from __future__ import annotations

from provisioner.node.apply.status import ApplyStatus, ModuleResult, ModuleState, SourceResult, SourceState


def test_status_exit_codes_and_summary():
    ok = SourceResult("/u", SourceState.APPLIED, modules=[ModuleResult("hostname", ModuleState.OK,
                                                                       changes=["write /etc/hostname"])])
    failed = SourceResult("/v", SourceState.PARTIAL, modules=[ModuleResult("users", ModuleState.FAILED, error="boom")])
    assert ApplyStatus(sources=[ok]).exit_code == 0
    assert ApplyStatus(sources=[ok, failed]).exit_code == 3
    assert ApplyStatus(sources=[ok, SourceResult("/w", SourceState.INVALID)]).exit_code == 1
    status = ApplyStatus(sources=[ok, failed])
    assert ApplyStatus.from_json(status.to_json()) == status
    from provisioner.node.apply.status import summary_lines
    assert summary_lines(status) == ["applied /u: 1 module(s) ok, 0 failed", "  hostname: write /etc/hostname",
                                     "partial /v: 0 module(s) ok, 1 failed", "  users: failed: boom"]
