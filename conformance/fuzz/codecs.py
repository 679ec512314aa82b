"""Decoder harnesses: ``rsp.saip.ProfilePackage.decode`` on mutated TS.48 profiles and
``rsp.messages.decode`` on mutated valid SGP.22 messages.

Invariants: the decoders raise nothing but DecodeError; what they accept re-encodes to exactly the
input (both keep received bytes: signatures are checked over them); the typed views of an accepted
package raise nothing but DecodeError.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

from hypothesis import strategies as st

from conformance.fuzz import FuzzFailure, Harness
from conformance.fuzz.mutate import mutated
from conformance.recording import new_pki, run_session
from rsp import es9_json
from rsp import messages as m
from rsp.errors import DecodeError
from rsp.saip import ProfilePackage
from rsp.testdata import testdata_dir
from rsp.tlv import read_header

SEED = b"kinsim-fuzz-corpus"
# ES10 request tag -> (request type, response type), for reading requests out of an APDU transcript.
ES10_TYPES = {
    0xBF20: (m.GetEuiccInfo1Request, m.EUICCInfo1),
    0xBF22: (m.GetEuiccInfo2Request, m.EUICCInfo2),
    0xBF2E: (m.GetEuiccChallengeRequest, m.GetEuiccChallengeResponse),
    0xBF38: (m.AuthenticateServerRequest, m.AuthenticateServerResponse),
    0xBF21: (m.PrepareDownloadRequest, m.PrepareDownloadResponse),
    0xBF41: (m.CancelSessionRequest, m.CancelSessionResponse),
    0xBF28: (m.ListNotificationRequest, m.ListNotificationResponse),
    0xBF2B: (m.RetrieveNotificationsListRequest, m.RetrieveNotificationsListResponse),
    0xBF30: (m.NotificationSentRequest, m.NotificationSentResponse),
    0xBF2D: (m.ProfileInfoListRequest, m.ProfileInfoListResponse),
    0xBF3E: (m.GetEuiccDataRequest, m.GetEuiccDataResponse),
    0xBF43: (m.GetRatRequest, m.GetRatResponse),
}


def _unexpected(what: str, exc: BaseException) -> FuzzFailure:
    return FuzzFailure(f"{what} raised {type(exc).__name__} (only DecodeError is allowed): {exc}")


class SaipHarness(Harness):
    name = "saip-decode"

    def __init__(self):
        super().__init__()
        folder = testdata_dir() / "ts48"
        self.corpus = [path.read_bytes() for path in sorted(folder.glob("v7/*.der"))[:2]]
        self.corpus.append((folder / "legacy" / "TS48v2_SAIP2.1_NoBERTLV.der").read_bytes())

    def check(self, data: st.DataObject) -> None:
        blob = data.draw(mutated(data.draw(st.sampled_from(self.corpus))))
        try:
            package = ProfilePackage.decode(blob)
        except DecodeError:
            return
        except Exception as exc:
            raise _unexpected("ProfilePackage.decode", exc) from exc
        if package.encode() != blob:
            raise FuzzFailure("ProfilePackage.encode() of an accepted package differs from the input")
        for view in ("iccid", "imsi", "version", "mandatory_services", "usim_aid", "summary"):
            try:
                value = getattr(package, view)
                if callable(value):
                    value()
            except DecodeError:
                pass
            except Exception as exc:
                raise _unexpected(f"ProfilePackage.{view}", exc) from exc


class Asn1Harness(Harness):
    name = "asn1-decode"

    def __init__(self):
        super().__init__()
        self.corpus = message_corpus()

    def check(self, data: st.DataObject) -> None:
        spec, original = data.draw(st.sampled_from(self.corpus))
        blob = data.draw(mutated(original))
        try:
            value = m.decode(spec, blob)
        except DecodeError:
            return
        except Exception as exc:
            raise _unexpected(f"decode({spec.__name__})", exc) from exc
        if value.dump() != blob:
            raise FuzzFailure(f"{spec.__name__}: dump() of an accepted value differs from the received bytes")
        try:
            value.native  # noqa: B018 - the whole value must be readable once accepted
        except Exception as exc:
            raise _unexpected(f"{spec.__name__}.native", exc) from exc


def message_corpus() -> list[tuple[type, bytes]]:
    """(type, DER) of every message of a recorded download: ES9+ fields and ES10 requests/responses."""
    recording = asyncio.run(run_session("download", SEED, new_pki(SEED)))
    corpus = list(_es9_fields(recording.events)) + list(_es10_messages(recording.events))
    unique = {(spec, der) for spec, der in corpus}
    return sorted(unique, key=lambda item: (item[0].__name__, item[1]))


def _es9_fields(events) -> Iterator[tuple[type, bytes]]:
    for event in events:
        function = es9_json.ES9_FUNCTIONS.get(event.get("es9"))
        if function is None:
            continue
        for fields, text in ((function.request, event["request"]), (function.response, event["response"])):
            body = json.loads(text) if text else {}
            for field in fields:
                if field.kind == es9_json.TLV and field.name in body:
                    yield field.spec, base64.b64decode(body[field.name])


def _es10_messages(events) -> Iterator[tuple[type, bytes]]:
    """ES10 requests (STORE DATA blocks joined) and their responses ('61xx' + GET RESPONSE joined)."""
    request, response, spec, pending = bytearray(), bytearray(), None, False
    for event in (e for e in events if "apdu" in e):
        apdu, answer = bytes.fromhex(event["apdu"]), bytes.fromhex(event["response"])
        if len(apdu) < 5 or apdu[1] not in (0xE2, 0xC0):
            continue
        if apdu[1] == 0xE2:
            request += apdu[5:5 + apdu[4]]
            if apdu[2] != 0x91:
                continue
            types = ES10_TYPES.get(read_header(bytes(request))[0])
            if types is not None:
                yield types[0], bytes(request)
            spec, pending = (types[1] if types else None), True
            request, response = bytearray(), bytearray()
        if not pending:
            continue
        response += answer[:-2]
        if answer[-2] != 0x61:  # the last part of the answer
            pending = False
            spec = spec or (m.ProfileInstallationResult if response.startswith(b"\xbf\x37") else None)
            if spec is not None and response:
                yield spec, bytes(response)
