def test_logs_show_refused_requests_as_plain_text(client):
    assert client.post("/v1/dextr3d?model=nope", data={"params": "{}"}).status_code == 404
    for path in ("/logs", "/logs/?lines=5"):
        reply = client.get(path)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
        assert "POST /v1/dextr3d refused with 404 ModelNotFoundError: " in reply.text
    assert len(client.get("/logs?lines=1").text.splitlines()) == 1


def test_logs_line_count_is_bounded(client):
    assert client.get("/logs?lines=0").status_code == 422
    assert client.get("/logs?lines=100000").status_code == 422
