"""The sans-I/O core: reply parsing, error mapping, event streams, and the retry rules (scripted transport)."""

from __future__ import annotations

import asyncio
import json

import aiaa_client
import httpx
import numpy as np
import pytest
from aiaa_client import (
    AIAAError,
    AsyncClient,
    BadRequest,
    Busy,
    Client,
    ConnectionFailed,
    NotFound,
    ProtocolError,
    ServerError,
    SessionExpired,
    Timeout,
    Unauthorized,
    write_nifti,
)
from aiaa_client._errors import error_from_reply
from aiaa_client._protocol import Reply, SSEDecoder, parse_result

MASK = np.zeros((4, 5, 6), np.uint8)
MASK[1:3, 2:4, 3:5] = 1
AFFINE = np.diag([0.5, 0.6, 2.0, 1.0])
NIFTI = write_nifti(MASK, AFFINE)


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> Reply:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return Reply(200, {"content-type": f"multipart/form-data; boundary={boundary}"}, body)


def test_exports_are_sorted_and_complete():
    assert aiaa_client.__all__ == sorted(aiaa_client.__all__)
    for name in aiaa_client.__all__:
        assert hasattr(aiaa_client, name)
    for error in (BadRequest, NotFound, SessionExpired, Busy, Unauthorized, ServerError, Timeout, ConnectionFailed):
        assert issubclass(error, AIAAError)


def test_multipart_reply_params_then_file():
    result = parse_result(multipart([("params", None, b'{"points": [[1, 2, 3]]}'),
                                     ("image", "C:\\tmp\\mask.nii.gz", NIFTI)]))
    assert result.params == {"points": [[1, 2, 3]]} and result.filename == "mask.nii.gz"
    assert np.array_equal(result.mask, MASK) and np.allclose(result.affine, AFFINE)


def test_multipart_reply_variants_of_other_servers():
    # quoted boundary, a v1 'points' part (JSON encoded twice), a binary body holding CRLFs
    binary = write_nifti(np.full((3, 3, 3), 13, np.uint8), compress=False)
    reply = multipart([("points", None, json.dumps(json.dumps([[4, 5, 6]])).encode()), ("file", "r.nii", binary)])
    reply = Reply(200, {"Content-Type": 'multipart/form-data; boundary="b0undary"'}, reply.content)
    result = parse_result(reply)
    assert result.params == {"points": [[4, 5, 6]]} and result.mask.max() == 13
    no_file = parse_result(multipart([("params", None, b"{}")]))
    assert not no_file.has_image
    with pytest.raises(ValueError, match="no image"):
        no_file.mask  # noqa: B018


def test_reply_with_the_python_clients_boundary_and_a_preamble():
    """A server may reuse client_api.py's encoder: boundary with a '$', preamble, extra CRLF at the end."""
    boundary = "----------lImIt_of_THE_fIle_eW_$"
    reply = multipart([("params", None, b'{"points": []}'), ("datapoint", "out/seg.nii.gz", NIFTI)], boundary)
    reply = Reply(200, {"content-type": f"multipart/form-data; boundary={boundary}"},
                  b"preamble\r\n" + reply.content + b"\r\n")
    result = parse_result(reply)
    assert result.params == {"points": []} and result.filename == "seg.nii.gz" and np.array_equal(result.mask, MASK)


def test_raw_image_and_json_replies():
    raw = parse_result(Reply(200, {"content-type": "application/octet-stream",
                                   "content-disposition": 'attachment; filename="m.nii.gz"'}, NIFTI))
    assert raw.filename == "m.nii.gz" and raw.params == {} and np.array_equal(raw.mask, MASK)
    classification = parse_result(Reply(200, {"content-type": "application/json"}, b'{"prediction": [0.1, 0.9]}'))
    assert classification.params == {"prediction": [0.1, 0.9]} and not classification.has_image


@pytest.mark.parametrize("status, error", [(400, BadRequest), (413, BadRequest), (422, BadRequest),
                                           (401, Unauthorized), (403, Unauthorized), (404, NotFound),
                                           (409, BadRequest), (440, SessionExpired), (503, Busy),
                                           (500, ServerError), (502, ServerError), (307, ProtocolError)])
def test_status_codes_map_to_typed_errors(status, error):
    exc = error_from_reply(status, {"Retry-After": "3"}, b'{"error": "Kind", "detail": "what went wrong"}')
    assert type(exc) is error and exc.status == status and exc.error == "Kind" and exc.detail == "what went wrong"
    assert str(exc) == f"HTTP {status} Kind: what went wrong"
    text = error_from_reply(status, {}, b"Status: plain text from another server")
    assert text.error is None and text.detail == "Status: plain text from another server"
    if error is Busy:
        assert exc.retry_after == 3.0


def test_server_sent_events_decoder():
    decoder = SSEDecoder()
    lines = [": keep-alive", "", "event: progress", "id: 7", 'data: {"state":', 'data: "running"}', "", "data: x", ""]
    events = [e for e in map(decoder.feed, lines) if e]
    assert [(e.event, e.id, e.data) for e in events] == [("progress", "7", '{"state":\n"running"}'),
                                                        ("message", "7", "x")]


class Script:
    """A scripted server: each request takes the next answer (a reply or an exception to raise)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def busy_reply():
    return httpx.Response(503, json={"error": "Busy", "detail": "queue full"}, headers={"Retry-After": "0"})


def models_reply():
    return httpx.Response(200, json=[{"name": "m", "type": "segmentation"}])


def mask_reply():
    return httpx.Response(200, content=NIFTI, headers={"content-type": "application/octet-stream"})


def make(script: Script, **kwargs) -> Client:
    return Client("http://aiaa", http_client=httpx.Client(transport=httpx.MockTransport(script)), backoff_s=0.001,
                  **kwargs)


def test_503_is_retried_for_any_call_then_succeeds():
    script = Script(busy_reply(), busy_reply(), mask_reply())
    result = make(script).segmentation("m", NIFTI)
    assert np.array_equal(result.mask, MASK) and len(script.requests) == 3
    assert all(r.url.path == "/v1/segmentation" for r in script.requests)


def test_503_gives_up_after_max_retries():
    script = Script(busy_reply(), busy_reply())
    with pytest.raises(Busy):
        make(script, max_retries=1).models()
    assert len(script.requests) == 2


def test_connection_reset_is_retried_for_idempotent_calls_only():
    reset = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    script = Script(reset, models_reply())
    assert make(script).models()[0]["name"] == "m" and len(script.requests) == 2
    script = Script(reset, mask_reply())
    with pytest.raises(ConnectionFailed, match="disconnected"):
        make(script).segmentation("m", NIFTI)  # the POST may have run: not repeated
    assert len(script.requests) == 1


def test_refused_connection_is_retried_even_for_posts():
    script = Script(httpx.ConnectError("connection refused"), mask_reply())
    assert make(script).segmentation("m", NIFTI).has_image and len(script.requests) == 2


def test_timeouts_are_reported_not_retried():
    script = Script(httpx.ReadTimeout("slow"), models_reply())
    with pytest.raises(Timeout):
        make(script).models()
    assert len(script.requests) == 1


def test_unreachable_server_is_connection_failed():
    with pytest.raises(ConnectionFailed, match="cannot reach"):
        Client("http://127.0.0.1:9", timeout=2, max_retries=0).models()


def test_token_goes_in_the_authorization_header_and_url_prefix_is_kept():
    script = Script(models_reply())
    client = Client("http://aiaa/prefix/", "tok", http_client=httpx.Client(transport=httpx.MockTransport(script)))
    client.models(label="spleen", type="segmentation")
    request = script.requests[0]
    assert request.headers["authorization"] == "Bearer tok"
    assert str(request.url) == "http://aiaa/prefix/v1/models?label=spleen&type=segmentation"


def test_async_client_retries_the_same_way():
    async def run():
        script = Script(busy_reply(), mask_reply())
        async with httpx.AsyncClient(transport=httpx.MockTransport(script)) as http:
            client = AsyncClient("http://aiaa", http_client=http, backoff_s=0.001)
            result = await client.segmentation("m", NIFTI)
        return result, script

    result, script = asyncio.run(run())
    assert np.array_equal(result.mask, MASK) and len(script.requests) == 2


def test_a_reply_without_a_mask_for_dextr3d_is_a_protocol_error():
    script = Script(httpx.Response(200, json={"points": []}))
    with pytest.raises(ProtocolError, match="no image"):
        make(script).dextr3d("m", NIFTI, [[0, 0, 0]] * 6)


def test_a_bad_server_url_is_refused_before_any_request():
    with pytest.raises(ValueError, match="http://host:port"):
        Client("127.0.0.1:5000")
    with pytest.raises(ValueError, match="not a server URL"):
        Client("http://[::1")
