"""A loader policy's integrity_reports.measured: report entries must be what the loader measured."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ca_service.ca import integrity as pure
from ca_service.errors import IntegrityComponentNotMeasured

ENGINE = pure.digest_of(b"engine v1")
OTHER = pure.digest_of(b"engine v2")
ARGS = pure.digest_of(b"--epochs 3")
DS = pure.digest_of(b"clinic-a", "sha256")
EAR = {"submods": {"sim": {"ca-service.loaded": [{"role": "loader", "digest": OTHER},
                                                 {"role": "engine", "digest": ENGINE},
                                                 {"role": "args", "digest": ARGS}, "junk"]}}}


def _report(engine: str = ENGINE, args: str = ARGS, extra=()) -> pure.IntegrityReport:
    return pure.build_report(order_id="o-1", loader_certificate_serial="1f", issued_at=datetime.now(UTC),
                             components=[pure.Component("engine", engine), pure.Component("dataset/a", DS), *extra],
                             arguments_digest=args)


def test_measured_components_from_the_ear():
    assert pure.measured_components(EAR) == (("loader", OTHER), ("engine", ENGINE), ("args", ARGS))
    assert pure.measured_components({}) == ()


def test_match_passes_and_unlisted_roles_are_not_checked():
    measured = pure.measured_components(EAR)
    pure.check_measured(_report(), measured, ["engine", "args"])
    pure.check_measured(_report(), measured, [])  # the dataset is not asked for


@pytest.mark.parametrize(("report", "roles", "field"), [
    (_report(engine=OTHER), ["engine"], "engine"),          # measured, but as the loader, not the engine
    (_report(args=pure.digest_of(b"--epochs 4")), ["args"], "arguments_digest"),
    (_report(extra=[pure.Component("engine/extra", ENGINE + "")]), ["dataset"], "dataset/a"),
])
def test_mismatch_names_role_and_component(report, roles, field):
    with pytest.raises(IntegrityComponentNotMeasured) as info:
        pure.check_measured(report, pure.measured_components(EAR), roles)
    assert info.value.code == "integrity.component_not_measured"
    assert info.value.fields["component"] == field


def test_a_role_the_report_omits_is_refused():
    report = pure.build_report(order_id="o-1", loader_certificate_serial="1f", issued_at=datetime.now(UTC),
                               components=[pure.Component("dataset/a", DS)], arguments_digest=ARGS)
    with pytest.raises(IntegrityComponentNotMeasured) as info:
        pure.check_measured(report, pure.measured_components(EAR), ["engine"])
    assert info.value.fields == {"role": "engine"}
