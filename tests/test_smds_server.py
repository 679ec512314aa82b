"""The SM-DS over HTTPS: ES12 with client certificates (SM-DP+ side: smdp.es12_client) and ES11 through
the LPA's client and discovery procedure (lpa.discovery), SGP.22 3.6, 5.8, 5.9, 6.6."""

from __future__ import annotations

import json
import ssl

import aiohttp
import pytest

from lpa.discovery import discover_events, root_smds_address
from lpa.es9_client import Es9ConnectionError
from rsp import es9_json, status
from rsp.errors import StatusCodeError
from smdp.es12_client import SmdsInaccessible, SmdsRefused, base_url
from smdp.es12_client import tls_context as es12_tls_context
from smds.server import REGISTER_EVENT_PATH
from tests.smds_fixtures import answer, fixture_euicc, other_host_tls, pki, running_smds

pytestmark = pytest.mark.asyncio


async def register(es12, eid, event_id, address="localhost:8443"):
    await es12.register_event(eid=eid, rsp_server_address=address, event_id=event_id)


# --- ES12 --------------------------------------------------------------------------------------


async def test_es12_register_and_delete(tmp_path):
    async with running_smds(tmp_path) as smds, smds.es12_client() as es12:
        await register(es12, pki().eid, "EV-1")
        [record] = smds.core.events()
        assert (record.eid, record.event_id, record.rsp_server_address) == (pki().eid, "EV-1", "localhost:8443")
        assert record.registrant == "2.999.10"  # the SM-DP+ OID of its TLS client certificate
        await es12.delete_event(eid=pki().eid, event_id="EV-1")
        assert smds.core.events() == []


async def test_es12_duplicate_and_unknown_events(tmp_path):
    async with running_smds(tmp_path) as smds, smds.es12_client() as es12:
        await register(es12, pki().eid, "EV-1")
        with pytest.raises(SmdsRefused) as duplicate:
            await register(es12, pki().eid, "EV-1", address="127.0.0.1:1")
        assert duplicate.value.code == status.SMDS_EXECUTION_ERROR  # what ConfirmOrder answers (8.9 / 4.2)
        assert (duplicate.value.smds_error.subject_code, duplicate.value.smds_error.reason_code) == ("8.9.5", "3.3")
        with pytest.raises(SmdsRefused) as unknown:
            await es12.delete_event(eid=pki().eid, event_id="EV-2")
        assert (unknown.value.smds_error.subject_code, unknown.value.smds_error.reason_code) == ("8.9.5", "3.9")
        assert [e.rsp_server_address for e in smds.core.events()] == ["localhost:8443"]


async def test_es12_invalid_eid(tmp_path):
    async with running_smds(tmp_path) as smds, smds.es12_client() as es12:
        with pytest.raises(SmdsRefused) as refused:
            await register(es12, "89049032000000000000000000000000", "EV-1")
        assert refused.value.smds_error.subject_code == "8.1.1"
        assert smds.core.events() == []


async def test_es12_only_for_the_requesters_own_address(tmp_path):
    async with running_smds(tmp_path) as smds:
        async with smds.es12_client(other_host_tls()) as other:
            with pytest.raises(SmdsRefused) as refused:
                await register(other, pki().eid, "EV-1", address="localhost:8443")
            assert refused.value.smds_error.code == status.FUNCTION_REQUESTER_NOT_ALLOWED
            await register(other, pki().eid, "EV-1", address="smdp.other.example")
        async with smds.es12_client() as es12:
            with pytest.raises(SmdsRefused):  # not the registrant
                await es12.delete_event(eid=pki().eid, event_id="EV-1")
        assert [e.registrant for e in smds.core.events()] == ["2.999.11"]


async def test_es12_refuses_a_client_without_certificate(tmp_path):
    async with running_smds(tmp_path) as smds:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=pki().ci.cert_pem.decode())
        body = {"header": {"functionRequesterIdentifier": "x", "functionCallIdentifier": "1"},
                "eid": pki().eid, "rspServerAddress": "localhost", "eventId": "EV-1"}
        headers = {"X-Admin-Protocol": es9_json.ADMIN_PROTOCOL, "Content-Type": es9_json.CONTENT_TYPE}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                async with session.post(base_url(smds.es12_address) + REGISTER_EVENT_PATH, json=body,
                                        headers=headers) as response:
                    await response.read()
        assert smds.core.events() == []


async def test_es12_refuses_a_certificate_of_an_untrusted_ca(tmp_path):
    foreign = pki("foreign")
    async with running_smds(tmp_path) as smds:
        # Trusts our CI for the server, but presents a client certificate of another CI.
        async with smds.es12_client(foreign.dp_tls, cis=[pki().ci.cert]) as es12:
            with pytest.raises(SmdsInaccessible) as refused:
                await register(es12, pki().eid, "EV-1")
        assert refused.value.code == status.SMDS_INACCESSIBLE  # what ConfirmOrder answers (8.9 / 5.1)
        assert smds.core.events() == []


async def test_es12_client_refuses_an_untrusted_sm_ds(tmp_path):
    async with running_smds(tmp_path) as smds, smds.es12_client(cis=[pki("foreign").ci.cert]) as es12:
        with pytest.raises(SmdsInaccessible):
            await register(es12, pki().eid, "EV-1")
        assert smds.core.events() == []


# --- ES11 through HTTPS -------------------------------------------------------------------------


async def test_discovery_through_https(tmp_path):
    card, other = fixture_euicc(), fixture_euicc(second=True)
    async with running_smds(tmp_path) as smds, smds.es12_client() as es12, smds.lpa_client() as lpa:
        await register(es12, card.eid, "EV-MEMBER")
        await register(es12, other.eid, "EV-OTHER")
        card.root_ds = smds.address
        found = await discover_events(card, lpa, smds_address=root_smds_address(card))
        assert found.smds_address == smds.address
        assert [(e.event_id, e.rsp_server_address) for e in found.events] == [("EV-MEMBER", "localhost:8443")]
        assert card.server_checks == [smds.address]  # the card verified the DSauth signature
        # The second eUICC sees its own event and nothing else.
        other.root_ds = smds.address
        found = await discover_events(other, lpa, smds_address=smds.address)
        assert [e.event_id for e in found.events] == ["EV-OTHER"]
        # With an EventID, only that record of the eUICC's own EID.
        found = await discover_events(card, lpa, smds_address=smds.address, event_id="EV-MEMBER")
        assert [e.event_id for e in found.events] == ["EV-MEMBER"]
        with pytest.raises(StatusCodeError) as refused:
            await discover_events(card, lpa, smds_address=smds.address, event_id="EV-OTHER")
        assert (refused.value.subject_code, refused.value.reason_code) == ("8.9.5", "3.9")


async def test_es11_failures_over_https(tmp_path):
    card = fixture_euicc()
    async with running_smds(tmp_path) as smds, smds.lpa_client() as lpa:
        async def initiate():
            return await lpa.initiate_authentication(euicc_challenge=card.get_euicc_challenge(),
                                                     euicc_info1=card.get_euicc_info1(), smdp_address=smds.address)

        auth = await initiate()
        with pytest.raises(StatusCodeError) as bad_signature:
            await lpa.authenticate_client(transaction_id=auth["transactionId"],
                                          authenticate_server_response=answer(card, auth, corrupt_signature=True))
        assert (bad_signature.value.subject_code, bad_signature.value.reason_code) == ("8.1", "6.1")

        auth = await initiate()
        response = answer(card, auth)
        with pytest.raises(StatusCodeError) as unknown:
            await lpa.authenticate_client(transaction_id=bytes(16), authenticate_server_response=response)
        assert unknown.value.code == status.TRANSACTION_ID_UNKNOWN
        ok = await lpa.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=response)
        assert ok == {"transactionId": auth["transactionId"], "eventEntries": []}
        with pytest.raises(StatusCodeError) as replay:
            await lpa.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=response)
        assert replay.value.code == status.TRANSACTION_ID_UNKNOWN

        foreign = fixture_euicc("foreign")
        auth = await initiate()
        with pytest.raises(StatusCodeError) as unknown_ci:
            await lpa.authenticate_client(transaction_id=auth["transactionId"],
                                          authenticate_server_response=answer(foreign, auth))
        assert unknown_ci.value.code == status.CI_PK_UNKNOWN

        with pytest.raises(StatusCodeError) as wrong_address:
            await lpa.initiate_authentication(euicc_challenge=card.get_euicc_challenge(),
                                              euicc_info1=card.get_euicc_info1(), smdp_address="lpa.ds.gsma.com")
        assert (wrong_address.value.subject_code, wrong_address.value.reason_code) == ("8.9.1", "3.8")


async def test_lpa_refuses_an_sm_ds_of_an_untrusted_ci(tmp_path):
    card = fixture_euicc()
    async with running_smds(tmp_path) as smds, smds.lpa_client(cis=[pki("foreign").ci.cert]) as lpa:
        with pytest.raises(Es9ConnectionError) as refused:
            await discover_events(card, lpa, smds_address=smds.address)
        assert refused.value.kind == "tls"


async def post(url: str, body, headers: dict | None = None) -> dict:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=pki().ci.cert_pem.decode())
    sent = {"X-Admin-Protocol": es9_json.ADMIN_PROTOCOL, "Content-Type": es9_json.CONTENT_TYPE, **(headers or {})}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, \
            session.post(url, data=data, headers=sent) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == es9_json.CONTENT_TYPE
        return json.loads(await response.read())


def status_code(document: dict) -> tuple[str, str]:
    data = document["header"]["functionExecutionStatus"]["statusCodeData"]
    return data["subjectCode"], data["reasonCode"]


async def test_es11_json_envelope(tmp_path):
    card = fixture_euicc()
    async with running_smds(tmp_path) as smds:
        url = base_url(smds.address)
        request = es9_json.encode_request(es9_json.ES11_INITIATE_AUTHENTICATION, {
            "euiccChallenge": card.get_euicc_challenge(), "euiccInfo1": card.get_euicc_info1(),
            "smdpAddress": smds.address})
        # Served at the ES9+ path and at the /es11/ path of rsp.es9_json.
        for path in (es9_json.INITIATE_AUTHENTICATION.path, es9_json.ES11_INITIATE_AUTHENTICATION.path):
            document = await post(url + path, request)
            assert document["header"]["functionExecutionStatus"]["status"] == "Executed-Success"
        renamed = {("smdsAddress" if k == "smdpAddress" else k): v for k, v in request.items()}
        document = await post(url + es9_json.INITIATE_AUTHENTICATION.path, renamed)
        values = es9_json.decode_response(es9_json.ES11_INITIATE_AUTHENTICATION, document)
        response = answer(card, values, matching_id="")
        document = await post(url + es9_json.ES11_AUTHENTICATE_CLIENT.path, es9_json.encode_request(
            es9_json.ES11_AUTHENTICATE_CLIENT, {"transactionId": values["transactionId"],
                                                "authenticateServerResponse": response}))
        assert document["transactionId"] == values["transactionId"].hex().upper()
        assert document["eventEntries"] == []
        assert status_code(await post(url + es9_json.INITIATE_AUTHENTICATION.path, b"{not json")) == ("1.3.1", "2.1")
        assert status_code(await post(url + es9_json.INITIATE_AUTHENTICATION.path,
                                      {"euiccChallenge": request["euiccChallenge"]})) == ("1.3.1", "2.2")
        assert status_code(await post(url + es9_json.INITIATE_AUTHENTICATION.path, request,
                                      {"X-Admin-Protocol": "gsma/rsp/v3.0.0"})) == ("1.3.2", "3.1")


async def test_es12_json_envelope(tmp_path):
    async with running_smds(tmp_path) as smds:
        context = es12_tls_context([pki().ci.cert], pki().dp_tls)
        url = base_url(smds.es12_address) + REGISTER_EVENT_PATH
        headers = {"X-Admin-Protocol": es9_json.ADMIN_PROTOCOL, "Content-Type": es9_json.CONTENT_TYPE}
        fields = {"eid": pki().eid, "rspServerAddress": "localhost", "eventId": "EV-1"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), headers=headers) as session:
            async def call(body):
                async with session.post(url, data=json.dumps(body)) as response:
                    return json.loads(await response.read())

            assert status_code(await call(fields)) == ("1.3.1", "2.2")  # no header
            header = {"functionRequesterIdentifier": "smdp", "functionCallIdentifier": "42"}
            assert status_code(await call({"header": header, **fields, "forwardingIndicator": "yes"})) == ("1.3.1", "2.1")
            document = await call({"header": header, **fields})
            assert document == {"header": {"functionExecutionStatus": {"status": "Executed-Success"}}}
        assert [e.event_id for e in smds.core.events()] == ["EV-1"]

