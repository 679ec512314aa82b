"""A whole Bound Profile Package load through pcscd into the software eUICC, profile management over
the same path, and a card pulled out in the middle of the load (ES10 level: the SM-DP+ side is the
test's signer from tests.euicc_fixtures; the ES9+ end-to-end runs are the lead's tests).

Marked ``pcsc``: these skip, saying how to enable them, without `scripts/pcscd-setup start`.
"""

from __future__ import annotations

import pytest

from lpa.es10 import Es10Client, ProfileRef
from lpa.pcsc import CardRemovedError, PcscTransport
from rsp import bpp
from rsp import messages as m
from rsp.ids import iccid_from_bcd
from tests.euicc_fixtures import (
    SmdpSide,
    iccid,
    make_euicc_dir,
    metadata,
    open_test_euicc,
    profile_package,
)
from tests.pcsc_fixtures import READERS, CardProcess, inserted, require_pcsc

pytestmark = pytest.mark.pcsc


@pytest.fixture
def virtual_reader() -> str:
    require_pcsc()
    return READERS[0]


def bound_package(es10: Es10Client, smdp: SmdpSide, eid: str, iccid_digits: str) -> bytes:
    """Challenge, AuthenticateServer and PrepareDownload on the card; the BPP bound to its otPK."""
    request = smdp.authenticate_server(es10.get_euicc_challenge())
    authenticated = es10.authenticate_server(
        server_signed1=request["serverSigned1"], server_signature1=request["serverSignature1"],
        euicc_ci_pkid_to_be_used=request["euiccCiPKIdToBeUsed"], server_certificate=request["serverCertificate"],
        ctx_params1=request["ctxParams1"])
    assert authenticated.name == "authenticateResponseOk", authenticated.native
    prepare = smdp.prepare_download(authenticated)
    prepared = es10.prepare_download(smdp_signed2=prepare["smdpSigned2"], smdp_signature2=prepare["smdpSignature2"],
                                     smdp_certificate=prepare["smdpCertificate"])
    assert prepared.name == "downloadResponseOk", prepared.native
    return smdp.bind(prepared, eid, metadata(iccid_digits), profile_package(iccid_digits))


def installed(result: m.ProfileInstallationResult) -> bool:
    return result["profileInstallationResultData"]["finalResult"].name == "successResult"


def iccids(es10: Es10Client) -> dict[str, str]:
    return {iccid_from_bcd(p["iccid"].native): p["profileState"].native for p in es10.get_profiles_info()}


def test_full_download_then_enable_disable_delete_over_pcsc(virtual_reader, tmp_path):
    make_euicc_dir(tmp_path / "card")
    line = iccid(1)
    progress: list[int] = []
    with open_test_euicc(tmp_path / "card") as euicc, inserted(euicc.card), \
            PcscTransport(virtual_reader) as transport, Es10Client(transport) as es10:
        package = bound_package(es10, SmdpSide(), euicc.eid, line)
        with es10.measure() as load:
            result = es10.load_bound_profile_package(package, lambda sent, total: progress.append(sent))
        assert installed(result)
        segments = bpp.segments(package)
        assert len(progress) == len(segments) and progress[-1] == sum(map(len, segments))
        # The fewest APDUs a T=0 card allows: every STORE DATA block, plus the GET RESPONSEs that
        # fetch the ProfileInstallationResult, the only data the load returns.
        blocks = sum(-(-len(s) // es10.block_size) for s in segments)
        assert load.apdus == blocks + -(-len(result.dump()) // 256)
        assert iccids(es10) == {line: "disabled"}
        es10.enable_profile(ProfileRef(iccid=line))
        assert iccids(es10) == {line: "enabled"}
        es10.disable_profile(ProfileRef(iccid=line))
        es10.delete_profile(ProfileRef(iccid=line))
        assert iccids(es10) == {}
    with open_test_euicc(tmp_path / "card") as euicc:  # and so it stayed on disk
        assert not euicc.isdr.state.profiles


def test_card_pulled_out_mid_load_then_the_next_run_installs(virtual_reader, tmp_path):
    make_euicc_dir(tmp_path / "card")
    line = iccid(2)
    with open_test_euicc(tmp_path / "card") as euicc:
        eid = euicc.eid
    with CardProcess(directory=tmp_path / "card") as card:
        card.insert()
        transport = PcscTransport(virtual_reader)
        es10 = Es10Client(transport).open()
        segments = bpp.segments(bound_package(es10, SmdpSide(), eid, line))
        for segment in segments[:3]:  # metadata and key agreement went in; the profile did not
            assert es10.store_data(segment) == b""
        card.remove()
        with pytest.raises(CardRemovedError):
            es10.store_data(segments[3])
        es10.close()
        transport.close()

        card.insert()  # back in the reader: the next run finds no half-installed profile, and installs
        with PcscTransport(virtual_reader) as again, Es10Client(again) as es10:
            assert iccids(es10) == {}
            package = bound_package(es10, SmdpSide(transaction_id=bytes(range(16))), eid, line)
            assert installed(es10.load_bound_profile_package(package))
            assert iccids(es10) == {line: "disabled"}
