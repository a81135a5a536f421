def test_list_all_models_with_the_keys_clients_read(client):
    reply = client.get("/v1/models")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    models = {m["name"]: m for m in reply.json()}
    assert set(models) == {"annotation_test", "segmentation_test"}
    for m in models.values():
        assert {"name", "type", "labels", "description", "version"} <= set(m)
        assert isinstance(m["version"], str) and isinstance(m["labels"], list)
    ann = models["annotation_test"]
    assert ann["type"] == "annotation" and ann["roi"] == [32, 32, 32] and ann["padding"] == 10.0 and ann["sigma"] == 2.0


def test_filters_by_label_case_insensitive_and_type(client):
    assert [m["name"] for m in client.get("/v1/models?label=HIPPOcampus").json()] == ["annotation_test"]
    assert [m["name"] for m in client.get("/v1/models?label=anterior").json()] == ["segmentation_test"]
    assert [m["name"] for m in client.get("/v1/models?type=segmentation").json()] == ["segmentation_test"]
    assert client.get("/v1/models?label=spleen").json() == []


def test_one_model_is_an_object_and_unknown_is_404(client):
    one = client.get("/v1/models?model=annotation_test").json()
    assert isinstance(one, dict) and one["name"] == "annotation_test"
    missing = client.get("/v1/models?model=nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_no_trailing_slash_redirects(client):
    assert client.get("/v1/models/", follow_redirects=False).status_code == 200


def test_health(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["ready"] is True
    assert body["models"]["annotation_test"]["status"] == "ready"
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
